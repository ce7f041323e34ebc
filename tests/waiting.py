"""Waiting in tests for what the engine does in its own time, without asserting how long it takes."""

import asyncio
import time


async def eventually(condition, timeout_s: float = 30.0) -> bool:
    """Whether `condition()` turned true within `timeout_s` (polled while the event loop runs). The bound only sets how
    long a failing test hangs: an event that comes late on a loaded machine (two cores shared among engines, workers
    and the other test process) must not fail it, so it is as generous as wait_for's."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def wait_for(condition, timeout_s: float = 30.0) -> bool:
    """Whether `condition()` turned true within `timeout_s`, polled from a test's own thread: a test waits half the
    interval past the event on average, over hundreds of waits. Not as often as eventually: some conditions read /proc
    or a log whole, on the cores the engine under test shares."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
