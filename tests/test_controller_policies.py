"""The five policies: each behaves as the architecture's table says, and no prompt goes to a level its
neighbour has no latent for."""

import itertools
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.policies import (
    ESCALATION_QUALITY_FLOOR,
    POLICY_NAMES,
    Policy,
    Rerouting,
    WindowInputs,
    make_policy,
)
from controller.predictor import Lookup, SimilarityPredictor
from controller.profiles import DegradationMatrix, LatencyProfile, QualityModel
from controller.similarity import SimilarityTable

LEVELS = (0, 5, 10, 15, 20, 25)
TABLE = SimilarityTable.bundled("clip")
PROFILE = LatencyProfile.bundled()
SIM = DegradationMatrix.from_quality_model(QualityModel(TABLE))
MIX = {0: 0.2, 5: 0.1, 10: 0.1, 15: 0.15, 20: 0.2, 25: 0.25}


class Always:
    """A predictor that ignores the prompt (to show which policies use the one they are given)."""

    def __init__(self, level: int):
        self.level = level

    def predict(self, lookup: Lookup) -> int:
        return self.level


def policy(name: str, predictor=None, levels=None):
    return make_policy(name, PROFILE, SIM, predictor or SimilarityPredictor(TABLE), levels=levels)


def inputs(workers: int = 8, demand: float = 2.0, current=None, mix=MIX, far_share: float = 0.0) -> WindowInputs:
    return WindowInputs(
        now=100.0,
        workers=workers,
        current=current or {},
        demand_rps=demand,
        k_mix=mix,
        slo_s=15.0,
        far_share=far_share,
    )


def quality_where_they_run(plan, mix, far_share: float) -> float:
    """The mean quality of the images by where each class's run: class 0's far neighbours at the level picked for
    them (the plan's row less its misses), its misses at 0, the hits by their rows."""
    total = 0.0
    for k, share in mix.items():
        row = plan.redirect[k]
        if k == 0:
            total += share * (1.0 - far_share) * 100.0
            picked = {kp: p - (1.0 - far_share if kp == 0 else 0.0) for kp, p in row.items()}
            total += share * sum(p * SIM.quality(kp, 0) for kp, p in picked.items())
        else:
            total += share * sum(p * SIM.quality(kp, k) for kp, p in row.items())
    return total


def test_unknown_policy():
    with pytest.raises(ValueError, match="unknown policy"):
        policy("fastest")


def test_clipper_ha_runs_everything_exactly():
    p = policy("clipper-ha")
    plan = p.plan(inputs(far_share=0.37))  # its far neighbours are picked 0 too: exactly, not 0.63 + 0.37
    assert plan.workers_per_level == {0: 8}
    assert all(row == {0: 1.0} for row in plan.redirect.values())
    assert plan.expected_quality == 100.0
    rng = random.Random(0)
    assert {p.choose_level(k, LEVELS[1:], plan, rng) for k in LEVELS} == {0}


def test_clipper_ht_runs_everything_at_the_largest_level():
    p = policy("clipper-ht")
    plan = p.plan(inputs())
    assert plan.workers_per_level == {25: 8}
    rng = random.Random(0)
    assert {p.choose_level(k, LEVELS[1:], plan, rng) for k in LEVELS} == {25}
    assert p.choose_level(25, (), plan, rng) == 0  # a miss runs in full
    assert p.choose_level(5, (5, 10), plan, rng) == 10  # the neighbour has nothing above 10
    # everything at 25 serves more than everything at 0, at a lower quality
    ha = policy("clipper-ha").plan(inputs(demand=20.0))
    ht = p.plan(inputs(demand=20.0))
    assert ht.served_rps > ha.served_rps and ht.expected_quality < ha.expected_quality


def test_nirvana_uses_the_table_alone_and_moves_no_worker():
    p = policy("nirvana", predictor=Always(25))
    assert p.predict(Lookup(0.80, LEVELS[1:])) == 10  # the table, not the predictor it was given
    assert p.predict(Lookup(None)) == 0
    current = {0: 5, 15: 3}
    for demand in (0.1, 2.0, 50.0):  # no load awareness
        plan = p.plan(inputs(demand=demand, current=current))
        assert {k: n for k, n in plan.workers_per_level.items() if n} == current
        assert all(row == {k: 1.0} for k, row in plan.redirect.items())
    rng = random.Random(0)
    assert [p.choose_level(k, LEVELS[1:], plan, rng) for k in LEVELS] == list(LEVELS)


def test_proteus_routes_every_prompt_alike():
    p = policy("proteus")
    plan = p.plan(inputs(demand=20.0, far_share=0.5))
    assert plan.status == "optimal" and plan.workers == 8
    row = plan.redirect[25]
    assert max(row) > 0  # overloaded: some go above level 0
    assert all(plan.redirect[k] == row for k in LEVELS[1:])
    # class 0: its far neighbours go where the row says, its misses run in full
    expected = {kp: 0.5 * p for kp, p in row.items()}
    expected[0] = expected.get(0, 0.0) + 0.5
    assert plan.redirect[0] == pytest.approx(expected)
    assert set(plan.demand_rps) == set(LEVELS)
    assert sum(plan.demand_rps.values()) == pytest.approx(20.0)
    # the prompt is ignored: the same random draw gives the same level whatever K* is
    picks = {k: p.choose_level(k, LEVELS[1:], plan, random.Random(7)) for k in LEVELS}
    assert len(set(picks.values())) == 1


@pytest.mark.parametrize("far_share", [0.0, 0.9])
def test_clipper_ht_expects_far_neighbours_at_their_quality_at_the_largest_level(far_share):
    """Clipper-HT serves a prompt whose neighbour is too far for any level at 25 from it all the same; its plan
    counted class 0 at 0, exact: on an engine whose prompts were mostly far from their neighbours it expected 92 where
    its images were 63 (SIMULATED)."""
    mix = {0: 0.8, 15: 0.2}
    # a load its workers serve in full (what they serve under overload: tests/test_plan_overload.py)
    plan = policy("clipper-ht").plan(inputs(demand=1.0, mix=mix, far_share=far_share))
    assert plan.redirect[0] == pytest.approx({0: 1.0 - far_share, 25: far_share} if far_share else {0: 1.0})
    assert plan.expected_quality == pytest.approx(quality_where_they_run(plan, mix, far_share))
    far = 0.8 * far_share * SIM.quality(25, 0) + 0.8 * (1 - far_share) * 100.0 + 0.2 * SIM.quality(25, 15)
    assert plan.expected_quality == pytest.approx(far)
    if far_share:
        assert plan.expected_quality < 70.0


@pytest.mark.parametrize("demand", [0.5, 1.5])
def test_proteus_expects_each_class_where_it_runs(demand):
    """Proteus plans on one average of the hit classes' quality per level, and its plan said that figure: misses
    (which run at 0) and far neighbours (which lose more than any hit) were counted at it too. At loads its workers
    serve in full; what they serve under overload: tests/test_plan_overload.py."""
    mix = {0: 0.6, 10: 0.2, 25: 0.2}
    for far_share in (0.0, 1.0):
        plan = policy("proteus").plan(inputs(demand=demand, mix=mix, far_share=far_share))
        assert plan.expected_quality == pytest.approx(quality_where_they_run(plan, mix, far_share))
    assert max(plan.redirect[25]) > 0 or demand < 1.0


def test_proteus_trades_quality_for_throughput_without_knowing_the_prompt():
    p = policy("proteus")
    light = p.plan(inputs(demand=0.5))
    heavy = p.plan(inputs(demand=30.0))
    assert light.served_rps == pytest.approx(0.5)
    assert max(light.redirect[0]) == 0  # spare capacity: everything exact
    assert heavy.workers_per_level[25] == 8  # overload: all at the fastest level


def test_argus_samples_the_redirect_row():
    p = policy("argus")
    plan = p.plan(inputs(demand=5.0))
    rng = random.Random(3)
    for k in LEVELS:
        row = plan.redirect[k]
        counts = Counter(p.choose_level(k, LEVELS[1:], plan, rng) for _ in range(2000))
        for kp, share in row.items():
            assert counts[kp] / 2000 == pytest.approx(share, abs=0.05)
        assert set(counts) <= set(row)


def test_argus_reroute_keeps_the_workers():
    p = policy("argus")
    plan = p.plan(inputs(demand=2.0))
    moved = p.reroute(inputs(demand=2.0, mix={25: 1.0}), plan.workers_per_level)
    assert moved.workers_per_level == plan.workers_per_level
    assert moved.demand_rps[25] == pytest.approx(2.0)


def _plans():
    """One plan per policy and load, made once: the property below only samples from them."""
    plans = []
    for name in POLICY_NAMES:
        p = policy(name)
        for demand in (0.5, 3.0, 40.0):
            plans.append((p, p.plan(inputs(demand=demand, current={0: 4, 20: 4}))))
    return plans


PLANS = _plans()
NEIGHBOURS = [(), *(c for n in range(1, 6) for c in itertools.combinations(LEVELS[1:], n))]


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, len(PLANS) - 1),
    k_star=st.sampled_from(LEVELS),
    neighbour=st.sampled_from(NEIGHBOURS),
    seed=st.integers(0, 2**32),
)
def test_choose_level_never_picks_a_level_the_neighbour_lacks(which, k_star, neighbour, seed):
    p, plan = PLANS[which]
    level = p.choose_level(k_star, neighbour, plan, random.Random(seed))
    assert level == 0 or level in neighbour
    if not neighbour:
        assert level == 0


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_makes_sound_plans(name):
    p = policy(name)
    for workers, demand in ((0, 0.0), (1, 0.1), (8, 3.0), (64, 500.0)):
        plan = p.plan(inputs(workers=workers, demand=demand))
        assert plan.policy == name and plan.workers == workers and plan.created_at == 100.0
        assert set(plan.redirect) == set(LEVELS)
        for row in plan.redirect.values():
            assert sum(row.values()) == pytest.approx(1.0)
        assert 0.0 <= plan.served_rps <= demand + 1e-6


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_a_plan_that_serves_nothing_expects_no_quality(name):
    # /plan read 100 for the fixed policies with no worker: the quality of images it said it could not serve
    plan = policy(name).plan(inputs(workers=0, demand=2.0))
    assert plan.served_rps == 0.0
    assert math.isnan(plan.expected_quality)


def test_only_argus_moves_a_late_job_up_a_level():
    assert {name for name in POLICY_NAMES if policy(name).escalates} == {"argus"}
    assert {name for name in POLICY_NAMES if policy(name).plans_for_bursts} == {"argus"}


def test_argus_moves_a_job_up_only_to_levels_above_the_quality_floor():
    argus = policy("argus")
    levels = (5, 10, 15, 20, 25)
    ups = {k: argus.fallback_levels(k, k, levels) for k in (5, 15, 20, 25)}
    for k, allowed in ups.items():
        assert all(kp > k and argus.degradation.quality(kp, k) >= ESCALATION_QUALITY_FLOOR for kp in allowed)
    assert ups[20] == (25,) and ups[25] == ()
    assert 25 not in ups[5]  # 60% of the exact image: below the floor
    assert argus.fallback_levels(0, 0, levels) == ()  # a miss has no level to move up to
    assert argus.fallback_levels(20, 0, (5, 25)) == (5, 25)  # an upgrade below K* can go back up
    assert all(policy(name).fallback_levels(20, 0, levels) == () for name in POLICY_NAMES if name != "argus")


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_without_a_prompt_cache_every_policy_plans_level_0_alone(name):
    """Without a cache no prompt has a latent to resume from: planned with every level, Clipper-HT put every worker
    at 25 and Proteus at 5 (their images all ran at 0) and Proteus expected 99.8 of them."""
    p = policy(name, levels=(0,))
    assert p.levels == (0,)
    for workers, demand in ((0, 1.0), (4, 0.5), (4, 50.0)):
        plan = p.plan(inputs(workers=workers, demand=demand, mix={0: 1.0}, current={0: workers}))
        assert plan.workers_per_level == {0: workers}
        assert plan.redirect == {0: {0: 1.0}} and set(plan.demand_rps) == {0}
        assert plan.served_rps <= min(demand, workers * PROFILE.capacity_rps(0, 15.0)) + 1e-9
        assert plan.expected_quality == 100.0 if workers else math.isnan(plan.expected_quality)
        if p.reroutes_between_windows:
            rerouted = p.reroute(inputs(workers=workers, demand=demand, mix={0: 1.0}), {0: workers})
            assert rerouted.redirect == {0: {0: 1.0}}
        assert p.choose_level(0, (), plan, random.Random(0)) == 0


def test_a_policy_refuses_levels_it_has_no_quality_for():
    with pytest.raises(ValueError, match="0 first"):
        policy("argus", levels=(0, 7))
    with pytest.raises(ValueError, match="0 first"):
        policy("argus", levels=(5, 10))


@pytest.mark.parametrize("steps", [30, 100])
def test_workers_profiled_at_other_steps_are_planned_to_serve_as_many_default_step_images(steps):
    """The SLO is of the default 50 steps a request runs: capacity under it was the largest batch of the profile's own
    N-step images within half of it. Profiled at 30 steps, 8 workers were planned to serve 2.35 50-step misses/s where
    they serve 1.57; at 100 steps, none."""
    from controller.demand import WorkPerImage

    line = {"fixed_s": 0.6, "step_s": 0.09, "batch_marginal": 0.5, "levels": LEVELS, "max_batch": 8}
    served = {}
    for n in (50, steps):
        profile = LatencyProfile.from_model(f"sdxl_a100 at {n} steps", "test", steps=n, **line)
        per_image = WorkPerImage(profile)(0, 50)  # a 50-step miss, in the demand's unit
        argus = make_policy("argus", profile, SIM, SimilarityPredictor(TABLE))
        plan = argus.plan(inputs(workers=8, demand=10.0 * per_image, mix={0: 1.0}))
        served[n] = plan.served_rps / per_image
    assert served[50] == pytest.approx(8 / 5.1)  # one image a batch: two take 7.65 s, past half the 15 s SLO
    assert served[steps] == pytest.approx(served[50])


def _declared(protocol: type) -> set[str]:
    """The members a protocol declares (its methods, properties and annotated attributes)."""
    return {name for name in (*vars(protocol), *getattr(protocol, "__annotations__", {})) if not name.startswith("_")}


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_has_what_its_protocols_declare_and_argus_alone_reroutes(name):
    """Policy declared `reroute`, which argus alone has: each baseline was typed as able to re-route between windows,
    and would have raised AttributeError if asked. Rerouting is its own capability."""
    p = policy(name)
    assert all(hasattr(p, member) for member in _declared(Policy)), _declared(Policy) - set(dir(p))
    assert isinstance(p, Rerouting) == (name == "argus") == p.reroutes_between_windows
