"""The allocation MILP and the route-planner LP, solved by OR-Tools for real."""

import json
import math
import random

import pytest

from controller.allocation import allocate, fit_allocation
from controller.flow_model import FlowProblem, SolverOptions, plan_from_solution
from controller.profiles import DegradationMatrix, LatencyProfile, QualityModel
from controller.route_planner import route
from controller.similarity import SimilarityTable

LEVELS = (0, 5, 10, 15, 20, 25)
SLO_S = 15.0
OPTIONS = SolverOptions()
PROFILE = LatencyProfile.bundled()
CAPACITY = {k: PROFILE.capacity_rps(k, SLO_S) for k in LEVELS}
SIM = DegradationMatrix.from_quality_model(QualityModel(SimilarityTable.bundled("clip")))


def problem(demand: dict[int, float], degradation: DegradationMatrix = SIM, capacity=None) -> FlowProblem:
    return FlowProblem.per_class(degradation, capacity or CAPACITY, demand)


def mixed_demand(total: float) -> dict[int, float]:
    shares = {0: 0.2, 5: 0.1, 10: 0.1, 15: 0.15, 20: 0.2, 25: 0.25}
    return {k: total * s for k, s in shares.items()}


def inflow(solution, level: int) -> float:
    return sum(f for (_, kp), f in solution.flows.items() if kp == level)


def assert_plan_is_sound(plan, workers: int) -> None:
    assert plan.workers == workers
    assert set(plan.redirect) == set(LEVELS)
    for k, row in plan.redirect.items():
        assert sum(row.values()) == pytest.approx(1.0)
        assert all(p > 0 for p in row.values())
        if k == 0:
            assert set(row) == {0}  # a miss runs in full
    assert plan.served_rps <= plan.total_demand_rps + 1e-6
    json.dumps(plan.to_json(), allow_nan=False)


def max_servable(demand: dict[int, float], workers: int) -> float:
    """Brute force over every allocation: misses only at level 0, every other class anywhere."""
    best = 0.0

    def allocations(levels, left):
        if len(levels) == 1:
            yield {levels[0]: left}
            return
        for n in range(left + 1):
            for rest in allocations(levels[1:], left - n):
                yield {levels[0]: n, **rest}

    misses = demand.get(0, 0.0)
    hits = sum(d for k, d in demand.items() if k)
    for x in allocations(LEVELS, workers):
        at_zero = CAPACITY[0] * x[0]
        served_misses = min(misses, at_zero)
        others = at_zero - served_misses + sum(CAPACITY[k] * x[k] for k in LEVELS[1:])
        best = max(best, served_misses + min(hits, others))
    return best


def test_light_demand_serves_every_class_at_its_level_or_lower():
    demand = mixed_demand(0.3 * 8 * CAPACITY[0])
    solution = allocate(problem(demand), 8, {}, OPTIONS)
    plan = plan_from_solution(problem(demand), solution, "argus", now=5.0)
    assert solution.status == "optimal"
    assert_plan_is_sound(plan, 8)
    assert plan.served_rps == pytest.approx(sum(demand.values()))
    for k, row in plan.redirect.items():
        assert max(row) <= k, (k, row)
    assert plan.expected_quality >= min(SIM.quality(k, k) for k in LEVELS)
    assert plan.created_at == 5.0


def test_capacity_holds_and_rows_sum_to_one_under_any_demand():
    rng = random.Random(11)
    for workers in (1, 3, 8, 64):
        current = {}
        for _ in range(8):
            weights = [rng.random() ** 2 for _ in LEVELS]
            total = workers * CAPACITY[0] * rng.uniform(0.1, 6.0)
            demand = {k: total * w / sum(weights) for k, w in zip(LEVELS, weights, strict=True)}
            solution = allocate(problem(demand), workers, current, OPTIONS)
            assert sum(solution.workers_per_level.values()) == workers
            for kp in LEVELS:
                assert inflow(solution, kp) <= CAPACITY[kp] * solution.workers_per_level[kp] + 1e-6
            for k in LEVELS:
                assert sum(f for (c, _), f in solution.flows.items() if c == k) <= demand[k] + 1e-6
            assert all(kp == 0 for (k, kp) in solution.flows if k == 0)
            assert_plan_is_sound(plan_from_solution(problem(demand), solution, "argus", 0.0), workers)
            current = solution.workers_per_level


def test_overload_moves_the_class_that_costs_least_quality_first():
    # two classes on a cluster without batching gains: class 5 loses 1 point one level up, class 20 loses 30
    profile = LatencyProfile.from_model(
        "flat", "test", fixed_s=0.0, step_s=0.1, batch_marginal=1.0, levels=LEVELS, steps=50, max_batch=1
    )
    capacity = {k: profile.capacity_rps(k, 20.0) for k in LEVELS}
    quality = {0: SIM.quality_by_class[0]}  # a far neighbour's, which no plan routes class 0 to
    for k in LEVELS[1:]:
        quality[k] = {
            kp: (99.0 if kp < k else 97.0 if kp == k else 97.0 - (30.0 if k == 20 else 1.0) * (kp - k) / 5)
            for kp in LEVELS
        }
    degradation = DegradationMatrix(SIM.table, quality, "test")
    workers = 10
    own_level_need = 1 / capacity[5] + 1 / capacity[20]  # workers per image/s of each class at its own level
    # light: everything at home
    light = problem({5: 0.8 * workers / own_level_need, 20: 0.8 * workers / own_level_need}, degradation, capacity)
    plan = plan_from_solution(light, allocate(light, workers, {}, OPTIONS), "argus", 0.0)
    assert max(plan.redirect[5]) <= 5 and max(plan.redirect[20]) <= 20
    # 20% over what fits at home, still servable by moving up: only the cheap class moves
    d = 1.2 * workers / own_level_need
    over = problem({5: d, 20: d}, degradation, capacity)
    plan = plan_from_solution(over, allocate(over, workers, {}, OPTIONS), "argus", 0.0)
    assert plan.served_rps == pytest.approx(2 * d)
    assert plan.redirect[20].get(25, 0.0) == 0.0
    assert sum(p for kp, p in plan.redirect[5].items() if kp > 5) > 0.0


def test_ten_times_capacity_still_serves_as_much_as_possible():
    workers = 4
    demand = mixed_demand(10 * workers * CAPACITY[25])
    solution = allocate(problem(demand), workers, {0: workers}, OPTIONS)
    plan = plan_from_solution(problem(demand), solution, "argus", 0.0)
    assert_plan_is_sound(plan, workers)
    assert plan.served_rps == pytest.approx(max_servable(demand, workers), rel=1e-6)
    # misses are the most expensive to serve: with everything else over capacity, none are
    assert solution.workers_per_level[25] == workers


def test_any_overload_still_serves_all_it_can():
    demand = {0: 5000 * CAPACITY[25], 25: 5000 * CAPACITY[25]}  # a flood at one worker
    solution = allocate(problem(demand), 1, {0: 1}, OPTIONS)
    plan = plan_from_solution(problem(demand), solution, "argus", 0.0)
    assert_plan_is_sound(plan, 1)
    assert plan.served_rps == pytest.approx(max_servable(demand, 1), rel=1e-6)


def test_a_measured_profile_losing_more_than_big_m_still_serves_all_it_can():
    # a samples file may hold any finite quality (one on another scale, or far below 0): losses of 2,100 points
    # above each class's level, against BIG_M = 1000, made serving there cost more than it earned
    quality = {k: {kp: 95.0 if kp <= k else -2000.0 for kp in LEVELS} for k in LEVELS} | {0: SIM.quality_by_class[0]}
    degradation = DegradationMatrix(SIM.table, quality, "test")
    workers, demand = 8, mixed_demand(6.0)
    overload = problem(demand, degradation)
    plan = plan_from_solution(overload, allocate(overload, workers, {0: workers}, OPTIONS), "argus", 0.0)
    assert_plan_is_sound(plan, workers)
    assert plan.served_rps == pytest.approx(max_servable(demand, workers), rel=1e-6)  # was 3.60 of 4.49
    assert plan.served_rps < sum(demand.values())


def test_a_class_without_demand_goes_to_its_own_level_when_it_is_staffed():
    solution = route(problem({25: 1.0}), {0: 2, 20: 2, 25: 2}, OPTIONS)
    plan = plan_from_solution(problem({25: 1.0}), solution, "argus", 0.0)
    assert plan.redirect[20] == {20: 1.0}
    assert plan.redirect[10] == {0: 1.0}  # its level has no workers: the staffed level that loses least


def test_ten_times_capacity_of_misses_alone_fills_level_0():
    demand = {0: 10 * 6 * CAPACITY[0]}
    solution = allocate(problem(demand), 6, {25: 6}, OPTIONS)
    assert solution.workers_per_level[0] == 6
    assert sum(solution.flows.values()) == pytest.approx(6 * CAPACITY[0])


@pytest.mark.parametrize("workers", [8, 64, 1024])
def test_unchanged_demand_leaves_the_plan_unchanged(workers):
    rng = random.Random(workers)
    current = {}
    for _ in range(5):
        demand = mixed_demand(workers * CAPACITY[0] * rng.uniform(0.5, 3.0))
        first = plan_from_solution(problem(demand), allocate(problem(demand), workers, current, OPTIONS), "a", 0.0)
        again = plan_from_solution(
            problem(demand), allocate(problem(demand), workers, first.workers_per_level, OPTIONS), "a", 10.0
        )
        assert again.workers_per_level == first.workers_per_level
        for k in LEVELS:
            assert again.redirect[k] == pytest.approx(first.redirect[k], abs=1e-9)
        current = first.workers_per_level


def test_at_light_load_the_plan_keeps_headroom_and_then_stays():
    # light load: many allocations serve everything at no quality loss; the one that leaves the most
    # capacity free wins (hits at their own, faster level), and once there it is kept
    demand = mixed_demand(0.5)
    for current in ({0: 8}, {0: 3, 25: 5}, {0: 2, 10: 2, 20: 2, 25: 2}):
        solution = allocate(problem(demand), 8, current, OPTIONS)
        served = plan_from_solution(problem(demand), solution, "a", 0.0)
        assert served.served_rps == pytest.approx(sum(demand.values()))
        assert served.expected_quality >= 95.0  # every class at its own level K* or lower
        again = allocate(problem(demand), 8, solution.workers_per_level, OPTIONS)
        assert again.workers_per_level == solution.workers_per_level


def test_solver_failure_falls_back_to_the_current_allocation():
    demand = mixed_demand(3.0)
    broken = SolverOptions(mip_solver="NO_SUCH_SOLVER")
    solution = allocate(problem(demand), 6, {0: 2, 25: 2}, broken)  # two workers joined since
    assert solution.status == "fallback"
    assert sum(solution.workers_per_level.values()) == 6
    assert solution.workers_per_level[0] + solution.workers_per_level[25] == 6
    assert_plan_is_sound(plan_from_solution(problem(demand), solution, "argus", 0.0), 6)
    # with no LP solver either: default routes, still a sound plan
    nothing = SolverOptions(mip_solver="NO_SUCH_SOLVER", lp_solver="NO_SUCH_SOLVER")
    solution = allocate(problem(demand), 6, {0: 6}, nothing)
    assert solution.status == "fallback" and solution.flows is None
    plan = plan_from_solution(problem(demand), solution, "argus", 0.0)
    assert_plan_is_sound(plan, 6)
    assert all(row == {0: 1.0} for row in plan.redirect.values())  # level 0 is the only one staffed


def test_no_workers_and_no_demand():
    solution = allocate(problem({}), 0, {}, OPTIONS)
    plan = plan_from_solution(problem({}), solution, "argus", 0.0)
    assert_plan_is_sound(plan, 0)
    assert plan.served_rps == 0.0 and math.isnan(plan.expected_quality)
    assert plan.to_json()["expected_quality"] is None


@pytest.mark.parametrize("current", [{25: 4}, {5: 4}])
def test_a_demand_near_zero_routes_hits_only_to_levels_with_workers(current):
    # what the EWMA decays to after a few minutes idle: flows of 1e-13 are within the solver's tolerance
    demand = mixed_demand(1e-12)
    solution = allocate(problem(demand), 4, current, OPTIONS)
    plan = plan_from_solution(problem(demand), solution, "argus", 0.0)
    assert_plan_is_sound(plan, 4)
    for k, row in plan.redirect.items():
        if k:  # a miss has level 0 alone
            assert all(plan.workers_per_level[kp] > 0 for kp in row), (k, row, plan.workers_per_level)


def test_route_planner_rederives_routes_for_fixed_workers():
    workers = {0: 3, 15: 2, 25: 3}
    before = problem(mixed_demand(1.0))
    after = problem({0: 0.4, 25: 2.5})  # demand moved to level 25, beyond its three workers
    for p in (before, after):
        solution = route(p, workers, OPTIONS)
        assert solution.workers_per_level == {0: 3, 5: 0, 10: 0, 15: 2, 20: 0, 25: 3}
        assert solution.solve_ms >= 0.0  # a number of milliseconds: the control loop observes it in its histogram
        for kp in LEVELS:
            assert inflow(solution, kp) <= CAPACITY[kp] * solution.workers_per_level[kp] + 1e-6
        plan = plan_from_solution(p, solution, "argus", 0.0)
        assert_plan_is_sound(plan, 8)
        assert plan.served_rps == pytest.approx(p.total_demand_rps)
    # class 25 loses least in full: what level 0 has spare after class 0, then all of 15, the rest at 25
    row = plan.redirect[25]
    assert row[0] == pytest.approx((3 * CAPACITY[0] - 0.4) / 2.5)
    assert row[15] == pytest.approx(2 * CAPACITY[15] / 2.5)
    assert row[25] == pytest.approx(1 - row[0] - row[15])


def test_fit_allocation():
    assert fit_allocation({0: 5, 25: 3}, 8, LEVELS) == {0: 5, 5: 0, 10: 0, 15: 0, 20: 0, 25: 3}
    assert fit_allocation({0: 5, 25: 3}, 6, LEVELS) == {0: 3, 5: 0, 10: 0, 15: 0, 20: 0, 25: 3}
    assert fit_allocation({0: 5, 25: 3}, 10, LEVELS)[0] == 7
    assert fit_allocation({}, 4, LEVELS)[0] == 4


@pytest.mark.parametrize("current", [{0: 2, 5: 6}, {0: 5, 5: 1, 25: 2}, {0: 1, 5: 3, 20: 4}])
def test_among_equally_good_plans_the_running_allocation_is_kept(current):
    """Misses, and hits of class 25 that level 5 serves at no loss, each well within one worker's capacity: every
    allocation with a worker at level 0 and one at 5 serves them all as well, and the move penalty resolves them to the
    one running, so the plan stays put while demand does (without it the solver returned any of them: a mutation test
    deleted it, and no test failed)."""
    light = problem({0: 0.2 * CAPACITY[0], 25: 0.2 * CAPACITY[5]})
    solution = allocate(light, 8, current, OPTIONS)
    assert solution.status == "optimal"
    assert solution.flows[(25, 5)] > 0.0  # an approximation is planned: the workers not serving stay where they are
    assert solution.workers_per_level == {kp: current.get(kp, 0) for kp in LEVELS}


@pytest.mark.parametrize(
    "demand", [{}, {0: 0.2 * CAPACITY[0]}, mixed_demand(3e-5), mixed_demand(1e-9), mixed_demand(1e-12)]
)
@pytest.mark.parametrize("current", [{0: 3, 15: 1}, {25: 4}])
def test_with_no_approximation_needed_every_worker_goes_back_to_level_0(demand, current):
    """After a burst, an idle engine of 4 sim workers kept {0: 3, 15: 1} for good (at 3e-5 images/s): with nothing
    routed above level 0, every allocation that staffs it scores the same, and the move penalty kept the one running.
    A worker that serves nothing costs nothing to move: the plan goes back to exact, all its routes at level 0."""
    solution = allocate(problem(demand), 4, current, OPTIONS)
    plan = plan_from_solution(problem(demand), solution, "argus", 0.0)
    assert solution.status == "optimal"
    assert plan.workers_per_level == {0: 4, 5: 0, 10: 0, 15: 0, 20: 0, 25: 0}
    assert all(row == {0: 1.0} for row in plan.redirect.values())
    assert plan.served_rps == pytest.approx(sum(demand.values()))
