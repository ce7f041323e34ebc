"""The controller in a running engine: a demand step moves workers between levels, and GET /plan shows it."""

import asyncio
import contextlib
import dataclasses
import json
import re

import pytest
from waiting import wait_for

from controller.profiles import LatencyProfile
from engine.client import AsyncArgusClient
from engine_process import start_engine
from protocols.client_messages import Images

WINDOW_S = 1.0
PROMPT = "a red fox in a snowy forest at dawn, oil painting, detailed, variation {}"
# sim workers: an exact image takes about 0.1 s, so four of them serve about 50 exact images/s
FOUR_SIM_WORKERS = dict(workers=4, backend="sim")
SIM_OPTIONS = ("--time-scale", "0.02", "--window-s", str(WINDOW_S))
# the engines of the tests marked own_engine start while the tests before theirs run: the two below that start theirs
# (a tiny worker's torch, most of all) come first, for those to start meanwhile
pytestmark = pytest.mark.usefixtures("engines_ahead")


def plan(engine) -> dict:
    status, body = engine.get("/plan")
    assert status == 200, body
    return json.loads(body)


async def offer(engine, rate: float, seconds: float, **fields) -> list:
    """Open-loop arrivals of near-duplicate prompts (they hit the cache at a high level)."""
    async with AsyncArgusClient(engine.client_address) as client:
        tasks = []
        for i in range(int(rate * seconds)):
            tasks.append(asyncio.create_task(client.generate(PROMPT.format(i), width=64, height=64, **fields)))
            await asyncio.sleep(1 / rate)
        return await asyncio.wait_for(asyncio.gather(*tasks), 60)


def planned_levels(current: dict) -> list[int]:
    return sorted(int(level) for level, n in current["workers_per_level"].items() for _ in range(n))


def mean_level(workers_per_level: dict) -> float:
    return sum(int(level) * n for level, n in workers_per_level.items()) / sum(workers_per_level.values())


def test_ready_gives_the_exact_capacity_in_images_of_the_default_steps_whatever_steps_the_profile_has(tmp_path):
    """/ready's exact_capacity_rps, what loadgen's --load multiplies, was in images of the latency profile's N: one
    measured at 30 steps had a sim worker serve 25.3 exact images/s within 0.4 s, where it makes 13.1 of the 50 steps
    a request runs."""
    path = tmp_path / "latency.json"
    # the bundled sdxl_a100's line (docs/controller.md), measured at 30 steps
    line = {"fixed_s": 0.6, "step_s": 0.09, "batch_marginal": 0.5, "levels": (0, 5, 10, 15, 20, 25), "max_batch": 8}
    LatencyProfile.from_model("sdxl_a100 at 30 steps", "test", steps=30, **line).save(path)
    options = ("--time-scale", "0.02", "--slo-ms", "400", "--latency-profile", str(path))
    engine = start_engine(tmp_path, *options, workers=1, backend="sim")
    try:
        # batches of 2 at 0.153 s each, where 5 of 30 steps took 0.198
        exact = LatencyProfile.bundled("sdxl_a100").scaled(0.02).capacity_rps(0, 0.4)
        assert engine.ready()["exact_capacity_rps"] == pytest.approx(exact)
    finally:
        assert engine.stop() == 0


def test_an_engine_that_learns_its_model_from_its_first_worker_warns_of_a_profile_of_another(tmp_path):
    """A tiny engine knows its model only once its first worker names it (workers/model_id.py): a latency profile
    measured on another model was planned with then without a word."""
    path = tmp_path / "latency.json"
    other = "tiny:0123456789abcdef"
    dataclasses.replace(LatencyProfile.bundled("tiny_cpu"), model=other).save(path)
    engine = start_engine(tmp_path, "--latency-profile", str(path), workers=1)
    try:
        # named by the worker start_engine waited for
        served = re.search(r"serving model (tiny:[0-9a-f]{16})", engine.log()).group(1)
        assert served != other
        warned = f"--latency-profile {path} was measured on model {other}, and the engine serves {served}"
        assert wait_for(lambda: warned in engine.log())
    finally:
        assert engine.stop() == 0


@pytest.mark.own_engine(*SIM_OPTIONS, **FOUR_SIM_WORKERS)
def test_a_demand_step_moves_workers_to_higher_levels(own_engine):
    engine = own_engine
    exact_capacity = engine.ready()["exact_capacity_rps"]
    light = asyncio.run(offer(engine, 0.2 * exact_capacity, 3.0))
    assert all(isinstance(reply, Images) for reply in light)
    before = plan(engine)["workers_per_level"]
    # the step: three times what exact generation can serve, for two and a half windows
    heavy = asyncio.run(offer(engine, 3.0 * exact_capacity, 2.5 * WINDOW_S))
    after = plan(engine)
    # the lowest levels that serve it all: higher on average than for the light load
    assert mean_level(after["workers_per_level"]) > mean_level(before)
    assert sum(after["workers_per_level"].values()) == 4
    assert all(abs(sum(row.values()) - 1.0) < 1e-6 for row in after["redirect"].values())
    # the workers were really moved: /ready reports them at the planned levels
    assert wait_for(lambda: planned_levels(plan(engine)) == sorted(w["level"] for w in engine.ready()["workers"]))
    assert sum(isinstance(reply, Images) and reply.images[0].level > 0 for reply in heavy) > 0


@pytest.mark.own_engine(*SIM_OPTIONS, **FOUR_SIM_WORKERS)
def test_requests_of_three_times_the_steps_are_planned_for_as_about_three_times_the_work(own_engine):
    """Each image was counted as one whatever its steps: at 150 steps (the sim backend's default is 50) argus
    planned for a third of the work its workers did, 3.0 images/s for 3 requests/s whose images took 0.91 of the
    fleet's time (4 sim workers, SIMULATED), and saw capacity to spare."""
    engine = own_engine
    rate = 0.2 * engine.ready()["exact_capacity_rps"]
    planned = []

    async def offer_and_watch() -> list:
        async def watch() -> None:
            while True:
                planned.append((await asyncio.to_thread(plan, engine))["total_demand_rps"])
                await asyncio.sleep(0.1)

        watching = asyncio.create_task(watch())
        try:
            return await offer(engine, rate, 3 * WINDOW_S, steps=150)
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching

    replies = asyncio.run(offer_and_watch())
    assert all(isinstance(reply, Images) for reply in replies)
    # a 150-step image is 2.8 (at level 0) to 4.2 (at 25) of the profile's 50-step ones; counted as one, the
    # demand planned for stayed within the rate and its 5% headroom
    assert max(planned) > 2 * rate
