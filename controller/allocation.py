"""The allocation MILP: integer workers per level x[K'] and flows f[K][K'], solved each window.

On top of the flow model (controller/flow_model.py): sum_K' x[K'] = workers
alive, and a small penalty for every worker moved off the current allocation,
so that equally good plans resolve to the one already running and the plan
stays put while demand does. Except when the solve routes nothing above level 0: then
every worker goes to level 0 (`all_exact`). Always returns a solution: if the solver fails or
runs out of time without one, the current allocation (fitted to the workers
alive) with routes from the route-planner LP.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from controller.demand_classes import DemandClass
from controller.flow_model import (
    NEGLIGIBLE,
    FlowProblem,
    FlowSolution,
    SolverOptions,
    add_flows,
    flow_values,
    solve,
)
from controller.route_planner import route

# flows above level 0 of this many images/s or less are within the solver's tolerance, not routing: at a demand of
# 1e-12 images/s (what the EWMA decays to minutes idle) CBC routes 1e-13 anywhere, and at 1e-9 serves none of it
_NOISE_RPS = 1e-9

# allocate, or what runs it elsewhere with the same arguments and result (the engine solves in a process of its own:
# engine/control/milp_process.py)
Allocator = Callable[[FlowProblem, int, Mapping[int, int], SolverOptions], FlowSolution]


def allocate(problem: FlowProblem, workers: int, current: Mapping[int, int], options: SolverOptions) -> FlowSolution:
    from ortools.linear_solver import pywraplp

    started = time.perf_counter()
    solver = pywraplp.Solver.CreateSolver(options.mip_solver)
    if solver is not None:
        x = {kp: solver.IntVar(0, workers, f"x_{kp}") for kp in problem.levels}
        solver.Add(solver.Sum(list(x.values())) == workers)
        flows, objective = add_flows(solver, problem, x, workers)
        moved = []
        for kp in problem.levels:
            m = solver.NumVar(0.0, solver.infinity(), f"m_{kp}")
            solver.Add(m >= x[kp] - current.get(kp, 0))
            solver.Add(m >= current.get(kp, 0) - x[kp])
            moved.append(m)
        # a worker moved leaves one level and joins another: it counts twice in sum |x - current|
        solver.Maximize(objective - options.move_penalty / (2 * max(workers, 1)) * solver.Sum(moved))
        params = pywraplp.MPSolverParameters()
        # the moving penalty of one worker in a large fleet is far below the default gap: prove optimality
        params.SetDoubleParam(params.RELATIVE_MIP_GAP, 0.0)
        status = solve(solver, options.time_limit_ms, params)
        if status is not None:
            counts = {kp: round(v.solution_value()) for kp, v in x.items()}
            served = flow_values(flows)
            if all_exact(problem, served):
                counts = {kp: workers if kp == 0 else 0 for kp in problem.levels}
            return FlowSolution(counts, served, status, (time.perf_counter() - started) * 1000.0)
    return fallback(problem, workers, current, options, started)


def all_exact(problem: FlowProblem, flows: Mapping[tuple[DemandClass, int], float]) -> bool:
    """Whether the solve needs no approximation: level 0 serves within the SLO and nothing is routed above it. Its
    workers elsewhere then serve nothing, and every allocation that staffs level 0 as well scores the same, so the move
    penalty kept them where they were: after a burst, an idle sim engine of 4 planned {0: 3, 15: 1} for good (at
    3e-5 images/s), and the first requests after the lull were planned on it. Moving a worker that serves nothing costs
    nothing, and at level 0 it serves an exact image: all of them go there."""
    if 0 not in problem.levels or problem.capacity_rps[0] <= 0:
        return False
    above = sum(f for (_, kp), f in flows.items() if kp)
    return above <= max(_NOISE_RPS, NEGLIGIBLE * problem.total_demand_rps)


def fallback(
    problem: FlowProblem, workers: int, current: Mapping[int, int], options: SolverOptions, started: float | None = None
) -> FlowSolution:
    """The plan without the MILP: the current allocation fitted to `workers`, with the route-planner LP's routes (GLOP,
    about a millisecond), status fallback. `started`: when the solve it stands in for began (perf_counter)."""
    started = time.perf_counter() if started is None else started
    solution = route(problem, fit_allocation(current, workers, problem.levels), options)
    return replace(solution, status="fallback", solve_ms=(time.perf_counter() - started) * 1000.0)


def fit_allocation(current: Mapping[int, int], workers: int, levels: tuple[int, ...]) -> dict[int, int]:
    """The current allocation resized to `workers`: losses come off the largest group (the higher level
    on ties), newcomers join the largest group (the lower level on ties: level 0 when all are empty)."""
    counts = {kp: max(0, current.get(kp, 0)) for kp in levels}
    excess = sum(counts.values()) - workers
    while excess > 0:
        largest = max(levels, key=lambda kp: (counts[kp], kp))
        counts[largest] -= 1
        excess -= 1
    if excess < 0:
        largest = max(levels, key=lambda kp: (counts[kp], -kp))
        counts[largest] -= excess
    return counts
