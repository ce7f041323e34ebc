"""The log lines of workers joining: one alone is a line of its own, as it always was; workers that join within a
second are one line that counts them. A fleet of a thousand started, or an engine restarted with a thousand workers
connected (each says hello again at its next beat), made a thousand INFOs."""

from __future__ import annotations

import logging

from engine.fleet.registry import WorkerHandle
from engine.logs.request_names import first_named
from workers.devices import on_device

log = logging.getLogger("argus.workers")

# the first worker's hello opens a window this long, in which the workers that join are said in one line: the hellos
# of a fleet of 50 sim workers started, or of one whose engine restarted, came within a second
JOINS_GATHERED_S = 1.0


def say_joins(workers: list[WorkerHandle]) -> None:
    if len(workers) == 1:
        (worker,) = workers
        hello = worker.hello
        log.info(
            "worker %s ready: %s %s %s, pid %d%s",
            worker.name,
            hello.backend,
            hello.model,
            on_device(hello.device, hello.simulated),
            hello.pid,
            " (SIMULATED)" if hello.simulated else "",
        )
        return
    # one backend and one model: the engine welcomes no other (engine/fleet/hello_check.py); devices and
    # processes may differ
    hello = workers[0].hello
    devices = _each_once(on_device(w.hello.device, w.hello.simulated).removeprefix("on ") for w in workers)
    pids = _each_once(str(w.hello.pid) for w in workers)
    log.info(
        "%d workers joined together: %s %s on %s, %s %s%s: %s",
        len(workers),
        hello.backend,
        hello.model,
        first_named(devices),
        "pid" if len(pids) == 1 else "pids",
        first_named(pids),
        " (SIMULATED)" if any(w.hello.simulated for w in workers) else "",
        first_named([w.name for w in workers]),
    )


def _each_once(values) -> list[str]:
    return list(dict.fromkeys(values))
