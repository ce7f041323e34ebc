"""Under overload, a plan says what its own allocation serves: every arrival follows its class's row, not only the
share of the class the solve chose to serve, nor a pool of workers every class is cut alike in (real OR-Tools
solves)."""

import random

import pytest

from controller.allocation import allocate
from controller.flow_model import FlowProblem, SolverOptions, plan_from_solution
from controller.policies import WindowInputs, make_policy, sample_level
from controller.predictor import SimilarityPredictor
from controller.profiles import DegradationMatrix, LatencyProfile, QualityModel
from controller.similarity import SimilarityTable

SLO_S = 15.0
PROFILE = LatencyProfile.bundled()
TABLE = SimilarityTable.bundled("clip")
SIM = DegradationMatrix.from_quality_model(QualityModel(TABLE))
CAPACITY = {k: PROFILE.capacity_rps(k, SLO_S) for k in SIM.levels}
WORKERS = 4


def served_by_a_fleet(plan, problem: FlowProblem, seconds: float = 2000.0, seed: int = 3) -> tuple[float, float]:
    """Images/s served and their mean quality, played out: Poisson arrivals of each class, each sent to a level drawn
    from its row; each level's workers serve its arrivals in order while their time lasts, and the time left idle at
    any level then serves the arrivals turned away elsewhere, in order (a worker runs any level)."""
    rng = random.Random(seed)
    arrivals = []
    for k, rate in problem.demand_rps.items():
        t = rng.expovariate(rate) if rate > 0 else seconds
        while t < seconds:
            arrivals.append((t, k, sample_level(plan.redirect[k], rng)))
            t += rng.expovariate(rate)
    arrivals.sort()
    time_left = {kp: plan.workers_per_level.get(kp, 0) * seconds for kp in problem.levels}
    qualities, turned_away = [], []
    for _, k, kp in arrivals:
        cost = 1.0 / CAPACITY[kp]
        if time_left[kp] >= cost:
            time_left[kp] -= cost
            qualities.append(SIM.quality(kp, k))
        else:
            turned_away.append((k, kp))
    idle = sum(time_left.values())
    for k, kp in turned_away:
        if idle >= 1.0 / CAPACITY[kp]:
            idle -= 1.0 / CAPACITY[kp]
            qualities.append(SIM.quality(kp, k))
    return len(qualities) / seconds, sum(qualities) / len(qualities)


@pytest.mark.parametrize(
    "demand",
    [
        {25: 1.0, 5: 3.0},  # the solve serves all of class 25 at 25, a share of class 5 beside it
        {0: 1.0, 5: 2.0, 25: 2.0},  # misses too, routed to a level it staffs with nobody
        {0: 2.0, 10: 1.5, 25: 1.5},
        {0: 0.3, 15: 0.5, 20: 0.5, 25: 0.5},  # within what the fleet serves: every image counted as planned
    ],
)
def test_an_overloaded_plan_expects_the_quality_its_allocation_serves(demand):
    problem = FlowProblem.per_class(SIM, CAPACITY, demand)
    plan = plan_from_solution(problem, allocate(problem, WORKERS, {0: WORKERS}, SolverOptions()), "argus", 0.0)
    served_rps, quality = served_by_a_fleet(plan, problem)
    assert plan.expected_quality == pytest.approx(quality, abs=1.0)
    assert plan.served_rps == pytest.approx(served_rps, rel=0.03)
    body = plan.to_json()
    assert body["unserved_share"] == pytest.approx(1 - served_rps / sum(demand.values()), abs=0.03)


def test_a_plan_says_what_share_of_its_demand_it_cannot_serve():
    problem = FlowProblem.per_class(SIM, CAPACITY, {25: 1.0, 5: 3.0})
    plan = plan_from_solution(problem, allocate(problem, WORKERS, {0: WORKERS}, SolverOptions()), "argus", 0.0)
    # 4 workers at level 25 serve 2.25 images/s of the 4 asked for
    assert plan.workers_per_level[25] == WORKERS
    assert plan.to_json()["unserved_share"] == pytest.approx(1 - WORKERS * CAPACITY[25] / 4.0)


@pytest.mark.parametrize(
    "name, workers, mix, demand, far_share, current",
    [
        # misses routed to a level 0 it staffs with nobody: pooled, 86.7 expected where 83.1 is served
        ("proteus", 4, {0: 0.5, 5: 0.2, 25: 0.3}, 2.0, 0.3, {}),
        ("proteus", 4, {0: 0.6, 25: 0.4}, 3.0, 0.0, {}),  # pooled, 1.06 images/s served where 1.55 are
        # workers at levels 10 to 20, misses left to the idle ones: pooled, 96.6 where 95.3
        ("proteus", 8, {0: 0.6, 10: 0.2, 25: 0.2}, 3.0, 0.0, {}),
        ("proteus", 8, {0: 0.6, 10: 0.2, 25: 0.2}, 30.0, 1.0, {}),
        ("clipper-ht", 4, {0: 0.5, 25: 0.5}, 3.0, 0.5, {}),  # pooled, 88.4 where 84.4
        ("nirvana", 4, {0: 0.3, 10: 0.3, 25: 0.4}, 2.0, 0.0, {0: 3, 25: 1}),  # pooled, 1.25 images/s where 1.15
        ("clipper-ha", 4, {0: 0.5, 25: 0.5}, 2.0, 0.0, {}),
    ],
)
def test_every_policys_plan_expects_what_its_routes_serve(name, workers, mix, demand, far_share, current):
    """The baselines' plans (Proteus's solve, the others' fixed rules) pooled the workers, every class cut alike: the
    same count as argus's now, so that /plan's figures of two policies can be set side by side."""
    policy = make_policy(name, PROFILE, SIM, SimilarityPredictor(TABLE))
    plan = policy.plan(WindowInputs(0.0, workers, current, demand, mix, SLO_S, far_share))
    served_rps, quality = served_by_a_fleet(plan, FlowProblem.per_class(SIM, CAPACITY, plan.demand_rps))
    assert plan.expected_quality == pytest.approx(quality, abs=1.0)
    assert plan.served_rps == pytest.approx(served_rps, rel=0.03)
