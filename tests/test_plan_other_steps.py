"""Requests of other steps than the default can resume at some levels alone: the plan routes them only there (or
to 0), and expects of them the quality the engine then serves."""

import random
from collections import Counter

import pytest
from dispatcher_harness import Harness

from controller.demand_classes import Reach, runs_at
from controller.level_shares import level_shares, resumable_steps
from controller.policies import POLICY_NAMES, WindowInputs, make_policy
from controller.predictor import Lookup, SimilarityPredictor
from controller.profiles import DegradationMatrix, LatencyProfile, QualityModel
from controller.similarity import SimilarityTable
from controller.window import Controller, ControllerConfig
from engine.control.loop import ControlLoop

LEVELS = (0, 5, 10, 15, 20, 25)
TABLE = SimilarityTable.bundled("clip")
DEGRADATION = DegradationMatrix.from_quality_model(QualityModel(TABLE))


def _loop() -> ControlLoop:
    policy = make_policy("argus", LatencyProfile.bundled(), DEGRADATION, SimilarityPredictor(TABLE))
    controller = Controller(policy, ControllerConfig(window_s=10.0), now=0.0)
    controller.maybe_replan(0.0, 4)
    h = Harness()
    return ControlLoop(policy, controller, h.registry, lambda w, k: None, h.metrics, h.clock, 10.0)


def _requests(loop: ControlLoop, steps: int, similarities: list[float], rng: random.Random) -> list[tuple[int, int]]:
    """(K*, K') of a request of `steps` steps for each similarity, its neighbour's latents cached where a run of
    its steps leaves them."""
    cached = tuple(resumable_steps(steps, 50, LEVELS))
    lookups = [Lookup(similarity=s, neighbour_levels=cached, prompt="a cat") for s in similarities]
    return [loop.choose(lookup, 1, steps, rng)[:2] for lookup in lookups]


@pytest.mark.parametrize(
    ("steps", "similarities", "per_window"), [(10, [0.99], 60), (30, [0.8, 0.85, 0.9, 0.95, 0.99], 20)]
)
def test_traffic_of_other_steps_is_planned_at_the_levels_it_resumes_at_and_the_quality_it_is_served(
    steps, similarities, per_window
):
    """At 10 steps a request resumes at level 25 alone (step 5), at 30 steps at 10, 20 and 25 (steps 5, 10, 15).
    Counted in its K*'s class, argus planned 6 requests/s of 10-step traffic of class 25 at levels 20 and 25 on 3
    and 1 workers: the 74% sent to 20 could not resume there and ran in full, on the capacity of level 20, and the
    plan expected a quality of 98.3 where the engine served 99.2."""
    usable = level_shares(tuple(resumable_steps(steps, 50, LEVELS)), steps, 50, LEVELS).levels
    loop = _loop()
    rng = random.Random(7)
    _requests(loop, steps, (similarities * per_window)[:per_window], rng)
    loop._controller.maybe_replan(10.0, 4)
    plan = loop.plan
    assert plan.served_rps == pytest.approx(plan.total_demand_rps)
    planned = {level for k, demand in plan.demand_rps.items() if demand > 0 for level in plan.redirect[k]}
    assert planned <= {0, *usable}

    served = _requests(loop, steps, (similarities * 2000)[:2000], rng)
    assert {level for _, level in served} <= planned
    quality = sum(DEGRADATION.quality(level, k_star) for k_star, level in served) / len(served)
    assert plan.expected_quality == pytest.approx(quality, abs=0.1)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_counts_a_class_that_resumes_at_some_levels_where_its_picks_run(name):
    """10-step requests of class 25 resume at level 25 alone: a pick below it runs in full, at 0."""
    ten_steps = Reach(25, (25,))
    policy = make_policy(name, LatencyProfile.bundled(), DEGRADATION, SimilarityPredictor(TABLE))
    plan = policy.plan(
        WindowInputs(now=0.0, workers=4, current={0: 4}, demand_rps=1.0, k_mix={ten_steps: 1.0}, slo_s=15.4)
    )
    row = plan.redirect[ten_steps]
    assert set(row) <= {0, 25}
    assert plan.expected_quality == pytest.approx(sum(p * DEGRADATION.quality(kp, 25) for kp, p in row.items()))
    assert plan.to_json()["redirect"]["25@25"] == {str(kp): p for kp, p in sorted(row.items())}


def test_a_default_steps_request_whose_neighbour_lacks_levels_follows_the_row_of_the_class_it_is_counted_in():
    """A request of the default steps keeps its K*'s class in the demand, whatever levels its neighbour holds: it
    follows its K*'s row. Argus sampled the row of a Reach of the same levels when the plan had one (planned for
    10-step traffic): two thirds of such requests of class 25 ran at level 25, on capacity the plan had for the
    10-step ones, where their K*'s row sent them to level 5 (in full, at 0, from a neighbour at 25 alone)."""
    ten_steps = Reach(25, (25,))
    loop = _loop()
    rng = random.Random(7)
    _requests(loop, 10, [0.99] * 20, rng)
    _requests(loop, 50, [0.99] * 5, rng)
    loop._controller.maybe_replan(10.0, 4)
    plan = loop.plan
    # where the K*'s row and the Reach's run for a request whose neighbour holds level 25 alone
    by_k_star, by_reach = runs_at(plan.redirect[25], ten_steps), plan.redirect[ten_steps]
    assert abs(by_k_star.get(25, 0.0) - by_reach.get(25, 0.0)) > 0.2  # the two rows route apart

    neighbour_at_25 = Lookup(similarity=0.99, neighbour_levels=(25,), prompt="a cat")
    served = Counter(loop.choose(neighbour_at_25, 1, 50, rng).level for _ in range(2000))
    assert set(served) <= set(by_k_star)
    assert served[25] / 2000 == pytest.approx(by_k_star.get(25, 0.0), abs=0.05)
    # and they were counted in class 25, not in the Reach
    loop._controller.maybe_replan(20.0, 4)
    assert loop.plan.demand_rps[25] > 0
    assert ten_steps not in loop.plan.demand_rps
