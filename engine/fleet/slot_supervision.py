"""What both launchers do for a worker slot, whatever runs its worker: a process (engine/fleet/launcher.py) or a Ray
actor (engine/fleet/ray/launcher.py).

A slot keeps its backoff (engine/fleet/restart_backoff.py) across its workers and an event set at the hello of the
current one. When a worker ends, the slot is started again after its backoff, counted `restarting` meanwhile, or, after
GIVE_UP_AFTER starts in a row that ended saying it cannot serve as configured, given up: started again only every
given_up_retry_s, counted `failed` meanwhile and while each such start is on its way to a hello (it most likely fails as
those before it did), its start logged at DEBUG and its end in one line. The engine is told at each end (on_exit).
How a worker is started, watched and ended, and the words of the log lines, are each launcher's own, but for the line
for workers that did not stop when asked (log_not_stopped).

While no worker serves, a request answered `no_worker` is told when one should be back (HTTP's Retry-After): the
soonest a slot's worker should say hello, by what is left of its backoff and how long its last worker took from its
start to its hello. A slot none of whose workers has said hello yet has nothing to go by, and says nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from engine.config import LaunchConfig
from engine.fleet.restart_backoff import RestartBackoff
from engine.logs.plurals import counted
from engine.metrics import EngineMetrics

log = logging.getLogger("argus.launcher")


class Launcher(Protocol):
    """What the engine asks of the launcher of its own workers."""

    async def run(self) -> None:
        """Starts a worker in each slot and keeps the slots served until stop()."""

    async def stop(self, timeout_s: float) -> None:
        """Ends every worker: those still up after the timeout are killed."""

    def kill(self, worker_id: str) -> bool:
        """Kills the slot's worker, which is then started again; False when no live worker of ours has the id."""

    def joined(self, worker_id: str) -> None:
        """The slot's worker said hello."""

    def refusal(self, worker_id: str, pid: int) -> str | None:
        """Why a worker of this id and pid is not the one now in the launcher's slot of that id, or None."""

    def back_in_s(self) -> float | None:
        """Seconds until a slot without a worker should have one again, or None: nothing to go by."""

    def coming_back(self) -> bool:
        """Whether a slot may serve again, its worker serving, starting or to be started again: one not given up."""

    def owns(self, worker_id: str) -> bool:
        """Whether the id is one of the launcher's slots."""


class SlotSupervisor:
    """The slot bookkeeping a launcher inherits: `_backoff` and `_hello` by worker id, set up as it is made and by
    `_starting`, `joined()`, and `_after_end()` once a slot's worker ended."""

    def __init__(
        self,
        config: LaunchConfig,
        metrics: EngineMetrics,
        on_exit: Callable[[str, bool], None],
        worker_ids: Iterable[str],
    ):
        """`worker_ids`: the slots', theirs from the start: the engine reads its worker socket before the launcher's
        run() has its first turn (or, with Ray, while it reaches Ray: seconds), and a worker started by hand under a
        slot's id (local-0, ray-0), its hellos queued meanwhile, was welcomed under it (refusal knew no slot yet) and
        the slot's own worker refused as a second worker of that id."""
        self._config = config
        self._metrics = metrics
        # told at every exit: the slot's id, and whether it is started again after its quick backoff (False: the slot
        # is given up, and a worker the dispatcher restarted there no longer counts as on its way back)
        self._on_exit = on_exit
        # worker id -> its wait before each restart
        self._backoff: dict[str, RestartBackoff] = {worker_id: config.restart_backoff() for worker_id in worker_ids}
        # worker id -> set when its current worker says hello (joined() finds one before the slot's first start)
        self._hello: dict[str, asyncio.Event] = {worker_id: asyncio.Event() for worker_id in self._backoff}
        # worker id -> when the slot's next worker starts, or its current one started, until that one says hello
        self._due: dict[str, float] = {}
        self._hello_after_s: dict[str, float] = {}  # worker id -> how long its last worker took from start to hello
        self._stopping = False

    def joined(self, worker_id: str) -> None:
        """The slot's worker said hello: it starts, and once it has stayed up a while its restart needs no backoff."""
        if worker_id in self._backoff:
            if self._given_up(worker_id):  # the cause was fixed: said, as the give-up was
                log.info("worker %s said hello: its slot, given up, serves again", worker_id)
            self._backoff[worker_id].joined()
            self._hello[worker_id].set()
            started = self._due.pop(worker_id, None)
            if started is not None:  # None: a hello said again (a rejoin), not a start's
                self._hello_after_s[worker_id] = time.monotonic() - started

    def back_in_s(self) -> float | None:
        """Seconds until the first of the slots without a worker should have one that said hello (0: overdue), or
        None: no slot is on its way back, or none that is has had a worker say hello to go by."""
        if self._stopping:
            return None
        now = time.monotonic()
        due = [at + self._hello_after_s[slot] - now for slot, at in self._due.items() if slot in self._hello_after_s]
        return max(0.0, min(due)) if due else None

    def coming_back(self) -> bool:
        """Whether a slot may serve again: one not given up (its worker serving, starting, restarting or ending, to be
        started again), while the launcher is not stopping them all. False for none (--workers 0)."""
        return not self._stopping and not all(backoff.given_up for backoff in self._backoff.values())

    def owns(self, worker_id: str) -> bool:
        return worker_id in self._backoff

    def _given_up(self, worker_id: str) -> bool:
        """The slot is given up: its worker is started only every given_up_retry_s, counted `failed` until its hello."""
        return self._backoff[worker_id].given_up

    def _starting(self, worker_id: str) -> asyncio.Event:
        """A new worker is about to start in the slot: the event its hello sets."""
        self._hello[worker_id] = asyncio.Event()
        if self._given_up(worker_id):
            self._due.pop(worker_id, None)  # not on its way: most likely it fails as the slot's last starts did
        else:
            self._due[worker_id] = time.monotonic()
        return self._hello[worker_id]

    async def _after_end(self, worker_id: str, cannot_serve: bool, giving_up: str, restarting: str) -> None:
        """The slot's worker ended, not stopped by the launcher; `cannot_serve`: it said it cannot serve as
        configured. Logs `giving_up` as the slot is given up, or `restarting` (what the backoff says of a grown wait,
        or of a slot given up, appended), and waits out the backoff: the slot is then to start a worker again. Before,
        a slot given up was left empty for the engine's whole life, its cause fixed or not."""
        backoff = self._backoff[worker_id]
        given_up_before = backoff.given_up
        given_up = backoff.gives_up(cannot_serve)
        wait_s = backoff.after_exit()
        if given_up and not given_up_before:
            log.error("%s; trying it again every %g s", giving_up, wait_s)
        else:
            log.warning("%s%s", restarting, backoff.said(wait_s))
        self._on_exit(worker_id, not given_up)
        self._metrics.worker_restarts.inc()
        await self._restart_after(worker_id, wait_s)

    async def _restart_after(self, worker_id: str, wait_s: float) -> None:
        """Waits out a slot's backoff, the slot counted `restarting`: it was in no state of argus_workers meanwhile (up
        to 30 s at a time in a crash loop), as if it were not there at all. A slot given up is counted `failed`, and
        has nothing to go by for when it is back."""
        if self._given_up(worker_id):
            self._due.pop(worker_id, None)
            state = "failed"
        else:
            self._due[worker_id] = time.monotonic() + wait_s
            state = "restarting"
        with self._metrics.workers.labels(state).track_inprogress():
            await asyncio.sleep(wait_s)


async def said_hello_or_ended(hello: asyncio.Event, ended: asyncio.Future, timeout_s: float) -> bool:
    """Waits for a new worker's hello or its end; False if neither came within timeout_s (it hangs as it starts)."""
    waiting = asyncio.ensure_future(hello.wait())
    try:
        await asyncio.wait((waiting, ended), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    return hello.is_set() or ended.done()


def log_not_stopped(kind: str, stuck: dict[str, int | None], timeout_s: float) -> None:
    """The one line for the workers (`kind`: "worker", "Ray actor") asked to stop that had not within `timeout_s`,
    `stuck` (worker id -> pid), as they are killed: else the log showed a pause of timeout_s, and nothing of why. Each
    is named by its id, as the launchers' other lines name it, and its pid (`local-1 (pid 1234)`): the local
    launcher's named its pid alone."""
    log.warning(
        "%s did not stop within %g s of being asked to (%s): killing %s",
        counted(len(stuck), kind),
        timeout_s,
        ", ".join(f"{worker_id} (pid {pid})" for worker_id, pid in stuck.items()),
        "it" if len(stuck) == 1 else "them",
    )
