"""What the allocation MILP and the route-planner LP share: the flow model, its solution, and the plan made from it.

Classes are the keys of the demand (for Argus, the predicted best level K*);
levels are the K' workers serve. f[K][K'] is the images/s of class K served at
K'. Both models maximise

    sum over (K, K') of [(M - loss[K][K']) / S - HEADROOM_WEIGHT / (capacity[K'] * W)] * f[K][K']

subject to sum_K' f[K][K'] <= demand[K] and sum_K f[K][K'] <= capacity[K'] * x[K'].
M is BIG_M (1000), ten times the largest loss of modelled quality (100
points), or ten times the problem's largest loss when that is more, so one
more image/s served always outweighs the quality it costs: serving comes
first, quality second. A measured profile bounds no loss (a samples file may
hold any finite quality, -2000 or one on another scale): with M fixed at
1000, a loss of 2100 made serving a class there cost more than it earned, and
on 8 workers argus served 3.6 of the 4.5 images/s they could. Among equally
good routes, each class prefers its own level, then the nearest (a cost of
ROUTE_TIE_BREAK per squared step between levels, far below any real loss and
below the allocation's moving penalty): without it the LP has many optima,
and the routes could flip between them from one solve to
the next with nothing changed. S is the total demand, or what the fleet can
serve at most (W workers at the fastest level) when that is less. Dividing by
it keeps the objective near M at any scale, so the solver's tolerances mean
the same at 8 workers as at 1024. It also keeps an image served worth far more
than any headroom or move cost however far demand outgrows the fleet: divided
by the demand alone, a flood of a few thousand times the fleet's capacity
made every flow cost more than it earned, and nothing was served.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.demand_classes import DemandClass, Reach, best_level, order
from controller.plan import Plan
from controller.profiles import DegradationMatrix

BIG_M = 1000.0
# the serving weight stays this many times the problem's largest loss: BIG_M against the 100 points modelled
# quality loses at most
_SERVING_MARGIN = BIG_M / 100.0
ROUTE_TIE_BREAK = 1e-4
# quality points a plan gives up to keep the whole cluster's capacity free: below any real quality loss, above
# the moving penalty, so of two equally good plans the one that leaves more headroom for bursts wins (it serves
# a class at its own level K* rather than spending a lower, slower level's capacity on it)
HEADROOM_WEIGHT = 0.5
# flows below this share of their class are solver noise, not routing
NEGLIGIBLE = 1e-9


@dataclass(frozen=True)
class SolverOptions:
    mip_solver: str = "CBC"  # any OR-Tools MPSolver backend: CBC, SCIP, HIGHS ...
    lp_solver: str = "GLOP"
    time_limit_ms: int = 1000
    # moving every worker to another level costs as much as this many points of average quality;
    # small, so it only breaks ties and damps churn, never outweighs a real gain
    move_penalty: float = 0.1


@dataclass(frozen=True)
class FlowProblem:
    levels: tuple[int, ...]
    capacity_rps: Mapping[int, float]  # level -> images/s of one worker (0: the SLO cannot be met there)
    demand_rps: Mapping[DemandClass, float]  # class -> images/s
    # class -> level -> expected quality (percent) at every level its images may run at: the allowed ones, and class
    # 0's far neighbours above 0 (DegradationMatrix), which only a plan of routes fixed in advance counts
    quality: Mapping[DemandClass, Mapping[int, float]]
    # class -> allowed level -> quality points lost (the objective's cost)
    loss: Mapping[DemandClass, Mapping[int, float]]

    @classmethod
    def per_class(
        cls,
        degradation: DegradationMatrix,
        capacity_rps: Mapping[int, float],
        demand_rps: Mapping[DemandClass, float],
        levels: tuple[int, ...] | None = None,
    ) -> FlowProblem:
        """One class per best level K*, and one per Reach in the demand, with the degradation matrix's costs (Argus).
        `levels`: some of the matrix's (None: all of them), those the policy serves (level 0 alone without a prompt
        cache). A Reach may run only at its levels and 0: elsewhere its images do not resume."""
        levels = levels or degradation.levels
        classes = sorted(set(levels) | {k for k in demand_rps if isinstance(k, Reach)}, key=order)

        def resumable(k: DemandClass) -> tuple[int, ...]:
            return tuple(kp for kp in levels if not kp or kp in k.levels) if isinstance(k, Reach) else levels

        quality = {k: {kp: degradation.quality(kp, best_level(k)) for kp in resumable(k)} for k in classes}
        return cls(
            levels,
            capacity_rps,
            {k: demand_rps.get(k, 0.0) for k in classes},
            quality,
            {
                k: {
                    kp: degradation.loss(kp, best_level(k))
                    for kp in quality[k]
                    if degradation.allowed(kp, best_level(k))
                }
                for k in classes
            },
        )

    @property
    def total_demand_rps(self) -> float:
        return sum(self.demand_rps.values())

    def pairs(self) -> list[tuple[int, int]]:
        return [(k, kp) for k, row in self.loss.items() for kp in row]


@dataclass(frozen=True)
class FlowSolution:
    workers_per_level: dict[int, int]
    flows: dict[tuple[DemandClass, int], float] | None  # None: nothing was solved (fallback routes)
    status: str
    solve_ms: float


def add_flows(solver: Any, problem: FlowProblem, workers: Mapping[int, Any], fleet: int) -> tuple[dict, Any]:
    """Flow variables and their constraints for `workers` (solver variables or fixed counts) of `fleet` in all."""
    flows = {pair: solver.NumVar(0.0, solver.infinity(), f"f_{pair[0]}_{pair[1]}") for pair in problem.pairs()}
    for k, row in problem.loss.items():
        solver.Add(solver.Sum([flows[(k, kp)] for kp in row]) <= problem.demand_rps[k])
    for kp in problem.levels:
        inflow = [f for (_, level), f in flows.items() if level == kp]
        if inflow:
            solver.Add(solver.Sum(inflow) <= problem.capacity_rps[kp] * workers[kp])
    fleet = max(fleet, 1)
    scale = max(_servable_at_most(problem, fleet), 1e-9)
    weight = serving_weight(problem)
    objective = solver.Sum(
        [
            ((weight - problem.loss[k][kp] - _detour(problem.levels, k, kp)) / scale - _busy(problem, kp, fleet)) * f
            for (k, kp), f in flows.items()
        ]
    )
    return flows, objective


def serving_weight(problem: FlowProblem) -> float:
    """What one image/s served earns before its loss: BIG_M, or more for a profile whose losses come near it."""
    largest = max((loss for row in problem.loss.values() for loss in row.values()), default=0.0)
    return max(BIG_M, _SERVING_MARGIN * largest)


def _servable_at_most(problem: FlowProblem, fleet: int) -> float:
    """The demand, or the images/s the whole fleet serves at its fastest level when that is less."""
    fastest = max(problem.capacity_rps.values(), default=0.0)
    return min(problem.total_demand_rps, fleet * fastest) if fastest > 0 else problem.total_demand_rps


def _busy(problem: FlowProblem, level: int, fleet: int) -> float:
    """Headroom cost of one image/s at `level`: the share of the fleet it keeps busy, weighted."""
    capacity = problem.capacity_rps[level]
    return HEADROOM_WEIGHT / (capacity * fleet) if capacity > 0 else 0.0


def _detour(levels: tuple[int, ...], k: DemandClass, kp: int) -> float:
    """The tie-break cost of serving class k at level kp (none for a class that is not a level)."""
    own = best_level(k)
    if own not in levels:
        return 0.0
    return ROUTE_TIE_BREAK * (levels.index(kp) - levels.index(own)) ** 2


def solve(solver: Any, time_limit_ms: int, params: Any = None) -> str | None:
    """Runs the solver: "optimal", "feasible" (stopped at the time limit with a solution), or None."""
    from ortools.linear_solver import pywraplp

    solver.SetTimeLimit(int(time_limit_ms))
    status = solver.Solve(params) if params is not None else solver.Solve()
    return {pywraplp.Solver.OPTIMAL: "optimal", pywraplp.Solver.FEASIBLE: "feasible"}.get(status)


def flow_values(flows: Mapping[tuple[DemandClass, int], Any]) -> dict[tuple[DemandClass, int], float]:
    return {pair: max(0.0, f.solution_value()) for pair, f in flows.items()}


def default_row(problem: FlowProblem, k: DemandClass, workers_per_level: Mapping[int, int]) -> dict[int, float]:
    """Where class k goes when nothing of it is routed: its own level when staffed (the cheapest level
    is level 0, the slowest, where a burst of a class that was quiet would cost the most), else the
    cheapest allowed level that has workers, nearest to k on ties, else its cheapest allowed level."""
    allowed, own = problem.loss[k], best_level(k)
    if own in allowed and workers_per_level.get(own, 0) > 0:
        return {own: 1.0}
    staffed = [kp for kp in allowed if workers_per_level.get(kp, 0) > 0] or list(allowed)
    return {min(staffed, key=lambda kp: (allowed[kp], abs(kp - own))): 1.0}


def plan_from_solution(problem: FlowProblem, solution: FlowSolution, policy: str, now: float) -> Plan:
    """Routes are each class's flows normalised; a class with no flow takes its default row. What it serves, and the
    quality, are what its allocation serves when every arrival follows its class's row (`served_where_routed`)."""
    workers = solution.workers_per_level
    if solution.flows is None:
        rows = {k: default_row(problem, k, workers) for k in problem.demand_rps}
    else:
        # a flow into a level that serves nothing is within the solver's tolerance, not a route: at a demand of
        # 1e-12 images/s (a few minutes idle) every hit was routed to an empty level 0
        serving = {kp for kp in problem.levels if problem.capacity_rps[kp] * workers.get(kp, 0) > 0}
        rows = {}
        for k in problem.demand_rps:
            row = {kp: f for (c, kp), f in solution.flows.items() if c == k}
            total = sum(row.values())
            kept = {kp: f for kp, f in row.items() if f > NEGLIGIBLE * total and kp in serving}
            rows[k] = (
                {kp: f / sum(kept.values()) for kp, f in kept.items()} if kept else default_row(problem, k, workers)
            )
    return plan_from_rows(problem, workers, rows, policy, now, solution.status, solution.solve_ms)


def served_where_routed(
    problem: FlowProblem, workers_per_level: Mapping[int, int], rows: Mapping[DemandClass, Mapping[int, float]]
) -> tuple[float, float]:
    """The images/s an allocation serves when every arrival follows its class's row, and their mean quality (NaN
    when none are).

    A row sends a class's whole demand, not the share of it the solve chose to serve: under overload the solve serves
    the classes that lose least (class 25 at level 25) and leaves out part of another (class 5, which loses 40 points
    there), but the images it left out still come, and queue at the same level as the ones it counted. So each level
    serves what is routed to it up to its workers' capacity, every class there cut by the same share; workers left
    idle (at levels routed less than they serve) take the others' overflow, as the dispatcher's idle workers take a
    job of any level. A route into a level with no capacity under the SLO, or where the class has no quality, serves
    nothing. Counted from the flows, 4 workers at level 25 offered 1 image/s of class 25 and 3 of class 5 expected
    76.4 where the images they serve are 69.2.
    """
    served = weighted = idle = overflow = overflow_work = overflow_weighted = 0.0
    for kp in problem.levels:
        capacity, workers = problem.capacity_rps[kp], workers_per_level.get(kp, 0)
        if capacity <= 0:
            idle += workers  # no image of this level is made within the SLO; its workers run other levels' jobs
            continue
        arriving = {
            k: demand * rows[k].get(kp, 0.0) for k, demand in problem.demand_rps.items() if kp in problem.quality[k]
        }
        rate = sum(arriving.values())
        if rate <= 0:
            idle += workers
            continue
        quality = sum(r * problem.quality[k][kp] for k, r in arriving.items()) / rate
        here = min(rate, capacity * workers)
        served += here
        weighted += here * quality
        idle += workers - here / capacity
        overflow += rate - here
        overflow_work += (rate - here) / capacity
        overflow_weighted += (rate - here) * quality
    if overflow_work > 0:
        taken = min(1.0, idle / overflow_work)
        served += taken * overflow
        weighted += taken * overflow_weighted
    return served, weighted / served if served > 0 else math.nan


def plan_from_rows(
    problem: FlowProblem,
    workers_per_level: Mapping[int, int],
    rows: Mapping[DemandClass, Mapping[int, float]],
    policy: str,
    now: float,
    status: str,
    solve_ms: float = 0.0,
) -> Plan:
    """A plan of these routes for these workers, whatever made them (a solve, or a policy's fixed rule): what it
    serves, and the quality, are what the workers serve when every arrival follows its class's row
    (`served_where_routed`), the same count for every policy. Counted instead as one pool of workers, every class
    cut alike, Proteus's plan on 4 workers (3 at level 25, 1 at 10) of 2 images/s, half of them of class 0 whose
    misses it routed to a level 0 it staffs with nobody, expected 86.7 where the images its routes serve are 83.1
    (played out, tests/test_plan_overload.py), and Clipper-HT's 88.4 where they are 84.4.
    """
    served, quality = served_where_routed(problem, workers_per_level, rows)
    return Plan(
        policy=policy,
        workers_per_level=dict(workers_per_level),
        redirect={k: dict(row) for k, row in rows.items()},
        demand_rps=dict(problem.demand_rps),
        served_rps=served,
        expected_quality=quality,
        solve_ms=solve_ms,
        created_at=now,
        status=status,
    )
