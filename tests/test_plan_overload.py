"""Under overload, argus's plan says what its own allocation serves: every arrival follows its class's row, not only
the share of the class the solve chose to serve (real OR-Tools solves)."""

import random

import pytest

from controller.allocation import allocate
from controller.flow_model import FlowProblem, SolverOptions, plan_from_solution
from controller.policies import sample_level
from controller.profiles import DegradationMatrix, LatencyProfile, QualityModel
from controller.similarity import SimilarityTable

SLO_S = 15.0
PROFILE = LatencyProfile.bundled()
SIM = DegradationMatrix.from_quality_model(QualityModel(SimilarityTable.bundled("clip")))
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
