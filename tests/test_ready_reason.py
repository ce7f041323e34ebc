"""GET /ready says in words why the engine is not ready: a 503 alone sent whoever read it to the log and the metrics."""

import asyncio

from waiting import eventually

from engine.config import LaunchConfig
from engine.http.readiness import readiness
from engine.server import Engine
from engine_process import in_process_config, start_worker, stop_in_process


async def test_not_ready_says_why_until_a_worker_is_in_rotation_and_again_as_the_engine_drains(tmp_path):
    # --workers 0: workers come from elsewhere
    engine = Engine(in_process_config(tmp_path, launch=LaunchConfig(count=0, backend="sim", time_scale=0)))
    running = asyncio.create_task(engine.run())
    worker = None
    try:
        none_connected = (
            "no worker is connected; none is announced (a remote worker may join at any time): --workers 0 starts none"
            " here, and no remote worker is connected or loading its model"
        )
        assert readiness(engine)["reason"] == none_connected
        worker = start_worker(f"ipc://{tmp_path}/workers", "sim", "--time-scale", "0")
        assert await eventually(lambda: readiness(engine)["ready"], timeout_s=60)
        assert readiness(engine)["reason"] is None
        (handle,) = engine.registry.registered()
        engine.registry.take_out(handle)  # as its batches failing would, until the next sweep puts it back
        assert readiness(engine)["reason"] == "its worker is taken out of rotation, its batches failing"
        engine.registry.put_back(handle)
        # it leaves: said as before it came (it said no worker had connected, after one had)
        worker.terminate()
        assert await eventually(lambda: not readiness(engine)["ready"], timeout_s=60)
        assert readiness(engine)["reason"] == none_connected
        engine.request_stop()
        assert readiness(engine)["reason"] == "the engine is draining: it admits no request"
        await asyncio.wait_for(running, 60)
    finally:
        await stop_in_process(engine, running, [worker] if worker else [])


async def test_an_engine_whose_own_workers_are_lost_says_none_is_connected_not_that_none_said_hello(tmp_path):
    engine = Engine(in_process_config(tmp_path, launch=LaunchConfig(count=1, backend="sim", time_scale=0)))
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: readiness(engine)["ready"], timeout_s=60)
        # its sim worker takes no time for an image: the profile scaled by 0 said 196,078 images/s
        said = readiness(engine)
        assert said["exact_capacity_rps"] is None and "--time-scale 0" in said["exact_capacity_reason"]
        engine.launcher.kill("local-0")
        assert await eventually(lambda: not readiness(engine)["ready"], timeout_s=60)
        # restarting, or already starting again: the slot is the engine's own either way, and on its way back
        reason = readiness(engine)["reason"]
        assert (
            reason.startswith("no worker is connected: of its own, 1 ") and "; one of its own is on its way" in reason
        )
    finally:
        await stop_in_process(engine, running, [])


async def test_an_engine_whose_every_worker_is_taken_out_as_failing_says_so(tmp_path):
    """Between the loss of the last worker in rotation and the sweep that puts one back at once: listed, but not
    serving, and not said to be missing."""
    engine = Engine(in_process_config(tmp_path, launch=LaunchConfig(count=2, backend="sim", time_scale=0)))
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: engine.registry.in_rotation == 2, timeout_s=60)
        workers = engine.registry.registered()
        for worker in workers:  # no await in between: no sweep puts one back meanwhile
            engine.registry.take_out(worker)
        said = readiness(engine)
        for worker in workers:
            engine.registry.put_back(worker)
        assert not said["ready"] and [w["state"] for w in said["workers"]] == ["failing", "failing"]
        assert said["reason"] == "each of its 2 workers is taken out of rotation, its batches failing"
    finally:
        await stop_in_process(engine, running, [])
