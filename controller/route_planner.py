"""The route-planner LP: r[K][K'] for a FIXED allocation, re-derived when demand shifts between MILP solves.

The same flow model as the allocation MILP (controller/flow_model.py) with the
workers per level as constants instead of integer variables, so it solves in a
few milliseconds at any fleet size.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from controller.flow_model import FlowProblem, FlowSolution, SolverOptions, add_flows, flow_values, solve


def route(problem: FlowProblem, workers_per_level: Mapping[int, int], options: SolverOptions) -> FlowSolution:
    """Flows for fixed workers; if the LP cannot be solved, no flows (the plan then takes default routes)."""
    from ortools.linear_solver import pywraplp

    started = time.perf_counter()
    workers = {kp: workers_per_level.get(kp, 0) for kp in problem.levels}
    solver = pywraplp.Solver.CreateSolver(options.lp_solver)
    if solver is not None:
        flows, objective = add_flows(solver, problem, workers, sum(workers.values()))
        solver.Maximize(objective)
        status = solve(solver, options.time_limit_ms)
        if status is not None:
            return FlowSolution(workers, flow_values(flows), status, _ms_since(started))
    return FlowSolution(workers, None, "fallback", _ms_since(started))


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
