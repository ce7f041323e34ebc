"""Whether a worker is expected, and so how long a request that finds none waits for one (the sweep answers it
`no_worker` after that: engine/dispatch/dispatcher.py).

A request waited `no_worker_timeout_s` (60 s) whatever the engine could know: with every slot of its own given up, or
`--workers 0` and no remote worker, each waited the minute for a 503 that was certain, and the OpenAI SDK's two retries
made it three. Now it waits that long only while a worker is expected:

- a worker is registered (one taken out of rotation as failing is put back at the next sweep when none is left);
- a slot of the engine's own may serve again: one not given up (starting, restarting, or its worker ending, to be
  started again; the launcher knows);
- a remote worker was cleared by its Probe (sent as it starts, before it loads its model: minutes, for SD-XL) within
  the time the engine gives a worker of its own to say hello (`--startup-timeout`, 180 s by default), and has not said
  hello since.

None expected, a remote worker may still come at any time, unannounced: one already loaded says hello within a second
or two of an engine's start, or of its link coming back; a sim worker, or one started before the engine was up to
hear its Probe, says none first. An engine that serves remote workers (`--workers 0`, or one has joined) waits
REMOTE_WAIT_S for one (10 s, a sixth of the full wait): time for a worker about to join to serve the request, while its
user learns within seconds that none did (about 30 s with the OpenAI SDK's two retries, not 3 minutes). One whose
workers are all its own, each given up, answers at once: none will come before a slot's next retry
(`given_up_retry_s`, minutes), which most likely fails as those before it did.
"""

from __future__ import annotations

import math

from engine.fleet.registry import WorkerRegistry
from engine.fleet.slot_supervision import Launcher

# how long a request waits for a remote worker when none is expected (above)
REMOTE_WAIT_S = 10.0
# the remote workers remembered loading their model at most, the latest probes kept: any peer of the worker socket may
# probe under ever-new ids, and while a worker was registered none was forgotten (3 minutes is the most it counts for)
PROBES_KEPT = 4096
# the sweep's words for a request that waited its full wait
WAITED_IN_VAIN = "no worker was available to serve this request"


class WorkerOutlook:
    def __init__(
        self,
        registry: WorkerRegistry,
        launcher: Launcher,
        slots: int,
        startup_timeout_s: float,
        no_worker_timeout_s: float,
        given_up_retry_s: float,
    ):
        """`slots`: the engine's own (--workers)."""
        self._registry = registry
        self._launcher = launcher
        self._slots = slots
        self._startup_timeout_s = startup_timeout_s
        self._full_wait_s = no_worker_timeout_s
        self._given_up_retry_s = given_up_retry_s
        self._probed: dict[str, float] = {}  # remote worker id -> when its Probe was cleared, until its hello
        self._remote_joined = False  # a worker not of the engine's own slots has said hello

    def probed(self, worker_id: str, now: float) -> None:
        """A worker was cleared by its Probe: it loads its model, and says hello once it has."""
        if not self._launcher.owns(worker_id):
            self._probed.pop(worker_id, None)  # to the end: oldest first
            self._probed[worker_id] = now
            if len(self._probed) > PROBES_KEPT:
                del self._probed[next(iter(self._probed))]

    def joined(self, worker_id: str) -> None:
        self._probed.pop(worker_id, None)
        if not self._launcher.owns(worker_id):
            self._remote_joined = True

    def wait(self, now: float) -> tuple[float, str]:
        """How long a request that finds no worker may wait for one, from when it found none, and what it is told once
        it has."""
        if self._expected(now):
            return self._full_wait_s, WAITED_IN_VAIN
        remote = not self._slots or self._remote_joined
        if remote:
            wait_s = min(REMOTE_WAIT_S, self._full_wait_s)
            return wait_s, f"no worker is connected, and none joined within {wait_s:g} s: {self._why_none()}"
        return 0.0, f"no worker is connected, and none is on its way: {self._why_none()}"

    def coming(self, now: float) -> tuple[bool, str]:
        """Whether a worker is on its way to an engine that has none registered, and that in words (GET /ready's
        reason): a 503 that said only that none was connected left its reader to guess whether to wait or to act."""
        if self._launcher.coming_back():
            back_in_s = self._launcher.back_in_s()
            if back_in_s is None:  # none of its slots has had a worker say hello yet to go by
                return True, "one of its own is on its way"
            if back_in_s == 0:
                return True, "one of its own is on its way, past the time its last took to say hello"
            return True, f"one of its own is on its way, in about {math.ceil(back_in_s)} s by its last start"
        if self._loading(now):
            return True, "a remote worker is on its way, loading its model"
        # a remote worker may come unannounced (one already loaded, or a sim worker, says no Probe first)
        remote = not self._slots or self._remote_joined
        said = "none is announced (a remote worker may join at any time)" if remote else "none is on its way"
        return False, f"{said}: {self._why_none()}"

    def _expected(self, now: float) -> bool:
        return bool(self._registry.registered()) or self._launcher.coming_back() or self._loading(now)

    def _loading(self, now: float) -> bool:
        """Whether a remote worker cleared by its Probe may still be loading its model."""
        self._probed = {worker: at for worker, at in self._probed.items() if now - at < self._startup_timeout_s}
        return bool(self._probed)

    def _why_none(self) -> str:
        if not self._slots:
            return "--workers 0 starts none here, and no remote worker is connected or loading its model"
        own = "worker is" if self._slots == 1 else f"{self._slots} workers are"
        return (
            f"the engine's own {own} given up, each ending before its hello saying it cannot serve as configured (the"
            f" engine's log says why), and tried again every {self._given_up_retry_s:g} s"
        )
