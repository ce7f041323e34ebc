"""The engine's controller solves on a thread of its own: image traffic on the loop's default executor (HTTP's
base64 encoding of large images) does not hold up its plans, and the thread ends with the engine."""

import asyncio
import threading

from waiting import eventually

from engine.config import PolicyConfig
from engine.server import Engine
from engine_process import in_process_config


def _controller_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("argus-controller")]


async def test_a_full_default_executor_does_not_hold_up_the_plans(tmp_path):
    engine = Engine(in_process_config(tmp_path, policy=PolicyConfig(window_s=0.2)))
    running = asyncio.create_task(engine.run())
    release = threading.Event()
    loop = asyncio.get_running_loop()
    try:
        assert await eventually(lambda: engine.control_loop.plan is not None)
        # every thread of the default executor busy, and more waiting: what a flood of large images does to it
        busy = [loop.run_in_executor(None, release.wait) for _ in range(64)]
        first = engine.control_loop.plan.created_at
        # a window closes every 0.2 s: a new plan, unless the solve waits for a thread
        assert await eventually(lambda: engine.control_loop.plan.created_at > first)
    finally:
        release.set()
        engine.request_stop()
        await asyncio.wait_for(running, 30)
    await asyncio.gather(*busy)
    assert _controller_threads() == []
