"""A request of other steps than the profile's is judged at the levels that cover its resumes' shares of its run."""

import random

import pytest
from dispatcher_harness import Harness

from controller.level_shares import LevelShares, covering_level, resumable_steps
from controller.policies import make_policy
from controller.predictor import Lookup, SimilarityPredictor
from controller.profiles import DegradationMatrix, LatencyProfile, QualityModel
from controller.similarity import SimilarityTable
from controller.window import Controller, ControllerConfig
from engine.client import ArgusClient
from engine.control.loop import ControlLoop
from engine_process import start_engine
from protocols.client_messages import Images

LEVELS = (0, 5, 10, 15, 20, 25)
CACHED = (5, 10, 15, 20, 25)
PROMPT = "a lighthouse on a cliff at dusk"


@pytest.mark.parametrize(
    ("steps", "starts"),
    [
        (50, {5: 5, 10: 10, 15: 15, 20: 20, 25: 25}),  # the profile's own N: every level its own step
        (25, {10: 5, 20: 10}),  # step 15 is 60% of 25, past level 25's 50%
        (20, {15: 5, 25: 10}),  # 25% is covered by level 15's 30%, and 50% by 25's
        (100, {5: 10, 10: 20, 15: 25}),  # of the steps one level covers, the latest
        (5, {}),  # no cached step below 5
    ],
)
def test_each_cached_step_is_offered_at_the_lowest_level_that_covers_its_share(steps, starts):
    shares = LevelShares.of(CACHED, steps, 50, LEVELS)
    assert dict(shares.starts) == starts
    assert shares.levels == tuple(sorted(starts))
    for level, step in starts.items():
        assert step / steps <= level / 50 and shares.start(level) == step
    assert shares.start(0) == 0


def test_a_share_past_the_top_level_is_covered_by_none():
    assert covering_level(15, 20, 50, LEVELS) is None
    assert covering_level(10, 20, 50, LEVELS) == 25


def test_any_step_into_the_run_is_a_resume_and_the_start_is_none():
    """A latent at step 0 is noise: a resume from it would be judged at a level and save nothing. One step in is
    a resume, at the lowest level there is, however small."""
    assert dict(LevelShares.of([0, 1], 100, 50, LEVELS).starts) == {5: 1}
    assert dict(LevelShares.of([0], 25, 50, LEVELS).starts) == {}
    assert covering_level(1, 50, 50, (0, 1, 5)) == 1


@pytest.mark.parametrize(
    ("levels", "steps", "asked"),
    [
        (CACHED, 50, [5, 10, 15, 20, 25]),
        (CACHED, 20, [5, 10]),  # step 15 is 75% of the run: no level resumes from it
        (CACHED, 100, [10, 20, 25]),  # 5 and 15 cover the levels 10 and 20 cover, and save less
        (CACHED, 6, []),
        ((10, 20), 20, []),  # step 10 is half of 20 steps, level 25's share, which this cache has not
    ],
)
async def test_a_batch_asks_back_only_the_latents_a_request_of_its_steps_could_resume_from(levels, steps, asked):
    """A worker brings back its latents at the cache levels below its run's steps: at 20 steps, step 15 crossed the
    wire and was cached for no lookup ever to use (three quarters of a run, past any level's share)."""
    assert resumable_steps(steps, 50, levels) == asked
    h = Harness(latent_levels=levels)
    h.add_worker("a")
    h.request(steps=steps)
    assert h.batches()[0].latent_levels == asked


@pytest.mark.parametrize(("guidance", "asked"), [(5.0, [5, 10, 15, 20, 25]), (1.0, []), (0.0, [])])
async def test_a_batch_run_without_guidance_asks_back_no_latents(guidance, asked):
    """An unguided run's latents are not cached (its composition would start guided requests' images): they crossed
    the wire to be dropped."""
    h = Harness(latent_levels=CACHED)
    h.add_worker("a")
    h.request(guidance_scale=guidance)
    assert h.batches()[0].latent_levels == asked


def _loop(policy_name: str) -> ControlLoop:
    table = SimilarityTable.bundled("clip")
    degradation = DegradationMatrix.from_quality_model(QualityModel(table))
    policy = make_policy(policy_name, LatencyProfile.bundled(), degradation, SimilarityPredictor(table))
    controller = Controller(policy, ControllerConfig(window_s=10.0), now=0.0)
    controller.maybe_replan(0.0, 4)
    h = Harness()
    return ControlLoop(policy, controller, h.registry, lambda w, k: None, h.metrics, h.clock, 10.0)


@pytest.mark.parametrize(("steps", "start"), [(50, 25), (20, 10), (25, 10), (100, 25)])
def test_a_request_served_at_the_top_level_resumes_at_most_half_way_through_its_own_steps(steps, start):
    """Clipper-HT serves every hit at the top level, 25 of 50. A 20-step request resumed at step 15 (75% of its
    run taken from its neighbour) where its profile promised half."""
    loop = _loop("clipper-ht")
    twin = Lookup(similarity=0.99, neighbour_levels=tuple(k for k in CACHED if k < steps), prompt="a cat")
    choice = loop.choose(twin, 1, steps, random.Random(0))
    assert choice.start == start and choice.start / steps <= choice.level / 50


def test_a_job_moves_up_only_to_steps_its_levels_cover():
    """Argus's fallbacks, the steps a late job may move up to, are judged by share as its level was."""
    loop = _loop("argus")
    cached = (5, 10, 15, 20)  # a 25-step run's: levels 10 and 20 by share, from steps 5 and 10
    assert loop.fallback_levels(20, 10, cached, 25) == ((20, 10),)
    assert loop.fallback_levels(20, 5, cached, 50) == ((10, 10), (15, 15), (20, 20))  # at the default N: its steps


def test_an_engine_resumes_a_request_of_fewer_steps_no_further_than_its_level_promises(tmp_path):
    """Through a running engine (Clipper-HT: every hit at the top level, 25 of 50, half the run): the same prompt
    again at 20 steps resumed at step 15 of its twin's run, three quarters, and now at step 10."""
    engine = start_engine(tmp_path, "--policy", "clipper-ht", "--time-scale", "0", workers=1, backend="sim")
    try:
        with ArgusClient(engine.client_address) as client:
            for steps in (20, 50):
                first, again = (client.generate(PROMPT, steps=steps) for _ in range(2))
                assert isinstance(first, Images) and first.images[0].level == 0
                assert isinstance(again, Images)
                assert (again.images[0].level, again.images[0].steps_run) == (steps // 2, steps // 2)
    finally:
        assert engine.stop() == 0
