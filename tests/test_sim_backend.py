"""The sim backend: latency from the controller's LatencyProfile, quality from its QualityModel."""

import argparse
import io
import math
import re
import subprocess

import pytest
from fake_engine import FakeEngine
from PIL import Image
from run_controls import NoControl

from controller.profile_latency import WorkerProcess, add_worker_arguments
from controller.profiles import LatencyProfile, ProfileLatency, QualityModel
from engine_process import start_worker
from protocols.worker_messages import (
    PROTOCOL_VERSION,
    REFUSED,
    BatchDone,
    Generate,
    GenerateItem,
    Heartbeat,
    Hello,
    ItemCancelled,
    ItemDone,
    ItemFailed,
    Welcome,
)
from workers.main import SIM_SIMILARITY_TABLE_ENV, sim_similarity_table
from workers.sim_backend import SimBackend

# the tests marked own_engine find theirs started while the tests before them ran (tests/engines_ahead.py)
pytestmark = pytest.mark.usefixtures("engines_ahead")

SDXL = LatencyProfile.bundled("sdxl_a100")
HASH = sim_similarity_table("hash")
PROMPT = "a lighthouse on a cliff at dusk"


def formula(steps_run: int, batch: int) -> float:
    """sdxl_a100's derivation: (0.6 + 0.09 steps run) (1 + 0.5 (b - 1))."""
    return (0.6 + 0.09 * steps_run) * (1.0 + 0.5 * (batch - 1))


# -- latency (the pure function; nothing here measures time) ---------------------------
def test_on_the_grid_the_latency_is_the_profiles():
    latency = ProfileLatency(SDXL)
    for level in SDXL.levels:
        for batch in range(1, SDXL.max_batch + 1):
            assert latency.seconds(level, SDXL.steps, batch) == SDXL.latency(level, batch)


def test_off_the_grid_only_the_per_step_part_scales():
    latency = ProfileLatency(SDXL)
    assert latency.seconds(5, 30, 1) == pytest.approx(formula(25, 1))  # N = 30: 25 steps run
    assert latency.seconds(0, 20, 3) == pytest.approx(formula(20, 3))
    assert latency.seconds(7, 50, 2) == pytest.approx(formula(43, 2))  # a level the profile lacks


def test_batches_above_the_profile_extend_its_last_two_points():
    assert ProfileLatency(SDXL).seconds(25, 50, 10) == pytest.approx(formula(25, 10))
    bent = LatencyProfile("bent", 10, {0: (1.0, 1.5, 1.8), 5: (0.6, 0.9, 1.0)}, "made up for a test")
    assert ProfileLatency(bent).seconds(0, 10, 5) == pytest.approx(1.8 + 2 * 0.3)
    assert ProfileLatency(bent).seconds(5, 10, 4) == pytest.approx(1.1)


def test_a_single_level_profile_scales_in_proportion():
    latency = ProfileLatency(LatencyProfile("one", 10, {0: (2.0,)}, "made up for a test"))
    assert latency.seconds(5, 10, 1) == pytest.approx(1.0)
    assert latency.seconds(0, 10, 3) == pytest.approx(6.0)  # from batch 1 and an empty batch of 0 s


def lines(levels, steps: int, fixed_and_per_step) -> LatencyProfile:
    """A made-up profile whose batch b takes fixed_b + per_step_b * (steps - K) at each level K."""
    table = {k: tuple(round(fixed + slope * (steps - k), 6) for fixed, slope in fixed_and_per_step) for k in levels}
    return LatencyProfile("made up for a test", steps, table, "made up for a test")


@pytest.mark.parametrize(
    "profile",
    [
        # measured: batch 1's least-squares line, 0.028 s per step run, crosses 0 s at 4.4 steps run
        LatencyProfile.bundled("tiny_cpu"),
        # slower at higher levels (noise, or a fixed cost the levels do not share): the line falls with the steps run
        lines((0, 5, 10, 15, 20, 25), 50, [(1.5, -0.01), (2.2, -0.015)]),
        # two levels, batch 4's line steeper than batch 3's: below them in steps, batch 4 takes less than batch 3
        lines((0, 25), 50, [(0.3, 0.01), (0.4, 0.015), (0.5, 0.02), (0.1, 0.037)]),
    ],
    ids=["tiny_cpu", "slower-at-higher-levels", "batch-lines-cross"],
)
def test_no_request_is_free_whatever_its_steps_and_batch(profile):
    """Fitted without bounds, time came out 0 (clamped) or below: bundled tiny_cpu took every image of 1 to 4 steps
    for 0 s, the second profile a 150-step image, and the third a batch of 8 five-step images for -0.98 s."""
    latency = ProfileLatency(profile)
    for steps in range(1, 201):
        for level in (k for k in profile.levels if k < steps):
            for batch in range(1, profile.max_batch + 5):
                assert latency.seconds(level, steps, batch) > 0, (level, steps, batch)
    # a level at or past the steps runs none of them: only the fixed part, never below 0 (it was -0.75 s at 25 of 10)
    for level in profile.levels:
        for batch in range(1, profile.max_batch + 5):
            assert latency.seconds(level, min(level, 10), batch) >= 0, (level, batch)


@pytest.mark.parametrize(
    "profile",
    [
        SDXL,
        LatencyProfile.bundled("tiny_cpu"),
        lines((0, 25), 50, [(0.3, 0.01), (0.4, 0.015), (0.5, 0.02), (0.1, 0.037)]),
    ],
    ids=["sdxl_a100", "tiny_cpu", "batch-lines-cross"],
)
def test_a_batch_never_takes_less_than_a_smaller_one_whatever_its_steps(profile):
    """Each batch size has its own line: off the profiled steps a larger batch's may lie below a smaller's. On bundled
    tiny_cpu a batch of 3 ten-step images took 0.365 s and one of 2 0.386 s, so the dispatcher's batch limit
    (DispatchTiming.batch_limit) let a job with 0.37 s left into a batch of 3 where its profile says 2 are late."""
    latency = ProfileLatency(profile)
    for steps in range(1, 151):
        for level in (k for k in profile.levels if k < steps):
            times = [latency.seconds(level, steps, batch) for batch in range(1, profile.max_batch + 5)]
            assert times == sorted(times), (level, steps)


@pytest.mark.parametrize("steps", [50, 20])
def test_a_batch_of_no_image_has_no_time_at_any_steps(steps):
    """Off the profile's steps a batch of 0 read the largest batch's line (a negative index), where on them it is
    refused as the profile's table refuses it."""
    with pytest.raises(ValueError, match="batch 0"):
        ProfileLatency(SDXL).seconds(0, steps, 0)


# -- stopping (a fake clock: nothing here measures time) ---------------------------------
class StopsAt:
    """The worker stopping (which aborts every request and cancels none) from `at` on, the clock's time."""

    def __init__(self, clock: list[float], at: float):
        self.clock, self.at = clock, at

    def between_steps(self) -> None:
        pass

    def is_aborted(self, request_id: str) -> bool:
        return self.clock[0] >= self.at

    def cancelled(self, request_id: str) -> bool:
        return False


# seconds before the run's end: in its last slice (they are 50 ms), and slices before
@pytest.mark.parametrize(("stop_before_end_s", "answered"), [(0.025, True), (1.0, False)])
def test_a_stopping_sim_worker_answers_a_batch_whose_time_has_run(monkeypatch, stop_before_end_s, answered):
    """A stop in the run's last slice found the images made and answered them cancelled, to be made again elsewhere
    from the start; one earlier cuts the run short."""
    clock = [0.0]
    monkeypatch.setattr("workers.sim_backend.time.perf_counter", lambda: clock[0])
    # a sleep lasts at least as long as asked, as a real one does (the sum's rounding could fall a hair short)
    monkeypatch.setattr("workers.sim_backend.time.sleep", lambda s: clock.__setitem__(0, clock[0] + s + 1e-9))
    backend = SimBackend(HASH, time_scale=1.0)
    run_s = backend._latency.seconds(0, 50, 2)
    items = [GenerateItem(f"r{i}", PROMPT, i, None, None) for i in range(2)]
    outcomes = backend.run(Generate(1, 0, 50, 64, 64, 5.0, "png", items), StopsAt(clock, run_s - stop_before_end_s))
    assert [type(o) for o in outcomes] == [ItemDone if answered else ItemCancelled] * 2


# -- quality ---------------------------------------------------------------------------
def run_items(backend: SimBackend, level: int, items: list[GenerateItem], steps: int = 50) -> list[float]:
    batch = Generate(1, level, steps, 64, 64, 5.0, "png", items)
    return [done.quality for done in backend.run(batch, NoControl())]


def quality(level: int, similarity: float | None, prompt: str = PROMPT, backend: SimBackend | None = None) -> float:
    backend = backend or SimBackend(HASH, time_scale=0.0)
    (q,) = run_items(backend, level, [GenerateItem("r", prompt, 1, None, similarity)])
    return q


def test_exact_images_are_full_quality():
    assert quality(0, None) == 100.0


def test_quality_falls_with_the_level_at_a_fixed_similarity():
    qualities = [quality(level, 0.9) for level in HASH.levels[1:]]
    assert qualities == sorted(qualities, reverse=True)
    assert qualities[0] > qualities[-1]


def test_quality_rises_with_the_similarity():
    qualities = [quality(15, s) for s in (0.5, 0.7, 0.8, 0.85, 0.9, 0.99)]
    assert qualities == sorted(qualities)
    assert qualities[0] < qualities[-1]


def test_quality_is_the_same_for_the_same_prompt_and_differs_between_prompts():
    backend = SimBackend(HASH, time_scale=0.0)
    items = [GenerateItem(str(i), p, i, None, 0.9) for i, p in enumerate([PROMPT, "a red fox", PROMPT])]
    first, other, again = run_items(backend, 20, items)
    assert first == again == quality(20, 0.9, backend=SimBackend(HASH, time_scale=0.0))
    assert first != other
    assert all(0.0 <= q <= 100.0 and math.isfinite(q) for q in (first, other))


@pytest.mark.parametrize(
    ("step", "steps", "level"), [(5, 25, 10), (10, 20, 25), (5, 20, 15), (20, 100, 10), (16, 20, 25)]
)
def test_a_resume_of_other_steps_has_the_quality_of_the_level_that_covers_its_share(step, steps, level):
    """Step 10 of 20 takes half the run from the neighbour, as level 25 of 50 does, not as level 10. Step 16 of 20,
    past the top level's share, is modelled at the top level."""
    backend = SimBackend(HASH, time_scale=0.0)
    item = [GenerateItem("r", PROMPT, 1, None, 0.9)]
    assert run_items(backend, step, item, steps) == run_items(backend, level, item)


class CancelsOne(NoControl):
    """The engine cancelled one request of the batch (its client went away) as the run came to its end."""

    def cancelled(self, request_id: str) -> bool:
        return request_id == "r1"


def test_an_item_the_engine_cancelled_is_answered_cancelled_and_the_rest_done():
    items = [GenerateItem(f"r{i}", PROMPT, i, None, None) for i in range(3)]
    outcomes = SimBackend(HASH, time_scale=0.0).run(Generate(1, 0, 50, 64, 64, 5.0, "png", items), CancelsOne())
    assert [type(o) for o in outcomes] == [ItemDone, ItemCancelled, ItemDone]
    assert [o.request_id for o in outcomes] == ["r0", "r1", "r2"]


def test_the_image_is_of_the_size_asked_for():
    items = [GenerateItem("r", PROMPT, 1, None, None)]
    (done,) = SimBackend(HASH, time_scale=0.0).run(Generate(1, 0, 50, 64, 128, 5.0, "png", items), NoControl())
    assert Image.open(io.BytesIO(done.image)).size == (64, 128)


def test_a_resumed_item_needs_its_neighbours_similarity():
    with pytest.raises(ValueError, match="similarity"):
        quality(10, None)


def test_levels_must_be_in_the_similarity_table():
    with pytest.raises(ValueError, match="not in the similarity table"):
        SimBackend(HASH, levels=(5, 7))


# -- a real sim worker process -----------------------------------------------------------
@pytest.mark.parametrize("embedder", [None, "clip"])
def test_a_sim_worker_reports_the_quality_of_the_engines_embedder_table(tmp_path, monkeypatch, embedder):
    if embedder:
        monkeypatch.setenv(SIM_SIMILARITY_TABLE_ENV, embedder)
    else:
        monkeypatch.delenv(SIM_SIMILARITY_TABLE_ENV, raising=False)
    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    args = parser.parse_args(["--backend", "sim", "--time-scale", "0"])
    # similarity 0.6 is above hash's level-5 threshold (0.458) and below clip's (0.65): the two differ a lot
    items = [GenerateItem("a", PROMPT, 1, None, 0.6), GenerateItem("b", "a red fox", 2, None, 0.95)]
    with WorkerProcess(args, 8, tmp_path) as worker:
        hello = worker.handshake()
        assert hello.simulated and hello.backend == "sim"
        _, done = worker.generate(5, 50, 64, 5.0, items)
    model = QualityModel(sim_similarity_table(embedder or "hash"))
    assert [d.quality for d in done] == [model.quality(5, i.similarity, i.prompt) for i in items]


def test_a_sim_worker_says_it_is_simulated_as_it_starts_and_loads_no_torch():
    """Its one line said 'ready (sim on sim)': nothing of a simulation, where a fleet of them says SIMULATED."""
    engine = FakeEngine()
    process = start_worker(engine.address, "sim", "--time-scale", "0", stderr=subprocess.PIPE, text=True)
    try:
        engine.receive(Hello)
        engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
        engine.receive(Heartbeat)  # sent once it logged that it is ready
        # and serves without torch: its seconds of import and hundreds of MB, in each of a fleet's processes
        with open(f"/proc/{process.pid}/maps") as maps:
            assert "/torch/" not in maps.read()
    finally:
        process.terminate()
        _, log = process.communicate(timeout=30)
        engine.close()
    # and ran on no device: it said 'loading the sim backend on cpu', then 'ready (sim on sim)'
    assert "loading the sim backend on no device" in log
    assert re.search(r"ready \(sim on no device, model sim:[0-9a-f]{16}\) SIMULATED", log)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"level": 60}, "level 60 is not below steps 50"),  # it answered made, steps_run -10
        ({"steps": 0}, "level 0 is not below steps 0"),
        ({"width": 4096}, "size 4096x64: each side must be a multiple of 8 from 64 to 2048"),  # it drew any size
        ({"height": 0}, "size 64x0"),  # a traceback, and worker_error: held against the worker
        ({"output_format": "bmp"}, "unsupported output format 'bmp'"),  # the same
        (
            {"items": [GenerateItem(f"r{i}", PROMPT, i) for i in range(9)]},
            "batch of 9 items; this backend takes 1 to 8",
        ),
        ({"guidance_scale": math.inf}, "guidance scale inf: not a finite number"),
    ],
)
def test_a_sim_worker_refuses_a_batch_it_cannot_run_and_serves_on(change, says):
    """As an sdxl or tiny worker does: the sim backend ran whatever came, answering impossible batches as made."""
    engine = FakeEngine()
    process = start_worker(engine.address, "sim", "--time-scale", "0")
    try:
        engine.receive(Hello)
        engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
        fields = {"level": 0, "steps": 50, "width": 64, "height": 64, "guidance_scale": 5.0, "output_format": "png"}
        fields.update({"items": [GenerateItem("r", PROMPT, 1, None, 0.9)], **change})
        engine.send(Generate(1, **fields))
        refused = engine.receive(BatchDone)
        assert refused.batch_id == 1 and len(refused.outcomes) == len(fields["items"])
        for outcome, item in zip(refused.outcomes, fields["items"], strict=True):
            assert isinstance(outcome, ItemFailed) and outcome.request_id == item.request_id
            assert outcome.code == REFUSED and says in outcome.message
        engine.send(Generate(2, 0, 50, 64, 64, 5.0, "png", [GenerateItem("next", PROMPT, 2)]))
        (done,) = engine.receive(BatchDone).outcomes
        assert isinstance(done, ItemDone) and done.request_id == "next"
    finally:
        process.terminate()
        process.wait(30)
        engine.close()


@pytest.mark.own_engine("--time-scale", "0", workers=1, backend="sim")
def test_an_engine_logs_its_sim_workers_on_no_device(own_engine):
    """It said 'started worker local-0 (pid N, sim on cpu)' and 'ready: sim ... on sim', where sim runs on none."""
    engine = own_engine
    try:
        (worker,) = engine.ready()["workers"]
    finally:
        assert engine.stop() == 0
    log = engine.log()  # a join is said a second after it (engine/logs/join_lines.py), or as the engine stops
    assert f"started worker local-0 (pid {worker['pid']}, sim on no device)" in log
    ready = rf"worker local-0/[0-9a-f]{{8}} ready: sim sim:[0-9a-f]{{16}} on no device, pid {worker['pid']}"
    assert re.search(ready, log)
    assert "on cpu" not in log and "on sim" not in log
