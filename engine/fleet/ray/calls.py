"""The Ray launcher's calls that may block, run off the event loop (engine/fleet/ray/launcher.py).

Once the cluster's GCS is gone, Ray's driver calls that need it wait for it: creating a named actor (its name is
registered with the GCS before `.remote()` returns) and `ray.kill` of an actor still registering waited on the event
loop until Ray ended the process, 60 s on, while /health went unanswered. They run here, one at a time in the order
given, in a daemon thread: the loop goes on, and the exit does not wait for a call that waits for ever (the threads of
asyncio.to_thread's executor are joined at exit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any

_Call = tuple[concurrent.futures.Future, Callable[..., Any], tuple]


class RayCalls:
    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="ray-calls", daemon=True).start()

    def submit(self, call: Callable[..., Any], *args: Any) -> asyncio.Future:
        """`call(*args)` in the thread, after those given before; awaited for its result, or not at all."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((done, call, args))
        return asyncio.wrap_future(done)

    def _run(self) -> None:
        while True:
            _run_call(*self._calls.get())


def _run_call(done: concurrent.futures.Future, call: Callable[..., Any], args: tuple) -> None:
    try:
        done.set_result(call(*args))
    except BaseException as error:
        done.set_exception(error)


def in_daemon_thread(call: Callable[[], Any]) -> asyncio.Future:
    """`call()` in a daemon thread of its own, beside those of RayCalls (one may wait for ever); awaited for its result,
    or given up on: the exit does not wait for it."""
    done: concurrent.futures.Future = concurrent.futures.Future()
    threading.Thread(target=_run_call, args=(done, call, ()), name="ray-call", daemon=True).start()
    return asyncio.wrap_future(done)
