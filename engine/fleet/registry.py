"""The workers the engine knows: their handshake, liveness and what they hold."""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

from engine.dispatch.jobs import Job
from engine.metrics import EngineMetrics
from protocols.worker_messages import Hello


class WorkerState(enum.Enum):
    READY = "ready"
    # registered and beating, but out of rotation: its batches kept failing (engine/dispatch/failing_workers.py)
    FAILING = "failing"
    LOST = "lost"


@dataclass(eq=False)
class WorkerHandle:
    identity: bytes
    hello: Hello
    level: int
    last_seen: float
    state: WorkerState = WorkerState.READY
    queue: deque[Job] = field(default_factory=deque)  # routed here, not yet sent
    inflight: dict[int, list[Job]] = field(default_factory=dict)  # batch id -> jobs sent
    busy_until: float = 0.0  # when the batches sent should be done, by the latency profile
    # since when its every heartbeat says it runs nothing (and no batch was sent to it): see WorkerLink._lost_batches
    idle_since: float | None = None
    beat_bounced: bool = False  # the last beat sent to it bounced: it had no connection (WorkerLink._beat)
    curve_key: bytes | None = None  # with CURVE, the public key it said hello with: a reload may revoke it
    failed_batches: int = 0  # batches in a row that made no image and failed one (engine/dispatch/failing_workers.py)
    # what was asked of the images those batches failed (engine/dispatch/failing_workers.py, Asked), oldest first: a
    # retry is not counted
    failed_asks: dict[Hashable, None] = field(default_factory=dict)
    out_for_s: float = 0.0  # how long it was last taken out of rotation for; 0 once a batch made an image
    back_at: float = 0.0  # when a worker taken out of rotation is given batches again

    @property
    def name(self) -> str:
        return self.identity.decode(errors="replace")

    @property
    def ready(self) -> bool:
        """In rotation: batches may be routed to it."""
        return self.state is WorkerState.READY

    @property
    def registered(self) -> bool:
        """Known to the engine (in rotation or not): it is sent aborts, and its loss is handled."""
        return self.state is not WorkerState.LOST

    @property
    def load(self) -> int:
        """Images routed to this worker and not yet answered."""
        return len(self.queue) + sum(len(jobs) for jobs in self.inflight.values())

    def held_jobs(self) -> list[Job]:
        return [job for jobs in self.inflight.values() for job in jobs] + list(self.queue)


class WorkerRegistry:
    """Owned by the engine loop; the worker link and the dispatcher read and update it."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self._by_identity: dict[bytes, WorkerHandle] = {}
        self._out: dict[WorkerHandle, None] = {}  # taken out of rotation as failing
        self._ready_gauge = metrics.workers.labels("ready")
        self._failing_gauge = metrics.workers.labels("failing")
        # bumped on every add and remove: what is derived from the set of workers is cached against it
        self.version = 0
        self._registered: tuple[WorkerHandle, ...] | None = None

    def add(self, identity: bytes, hello: Hello, level: int) -> WorkerHandle:
        handle = WorkerHandle(identity, hello, level, last_seen=time.monotonic())
        self._by_identity[identity] = handle
        self._changed()
        return handle

    def get(self, identity: bytes) -> WorkerHandle | None:
        return self._by_identity.get(identity)

    def remove(self, handle: WorkerHandle) -> None:
        handle.state = WorkerState.LOST
        self._by_identity.pop(handle.identity, None)
        self._out.pop(handle, None)
        self._changed()

    def take_out(self, handle: WorkerHandle) -> None:
        """Out of rotation: it stays registered (it beats, and answers what it holds) but is routed nothing."""
        handle.state = WorkerState.FAILING
        self._out[handle] = None
        self._counted()

    def put_back(self, handle: WorkerHandle) -> None:
        handle.state = WorkerState.READY
        self._out.pop(handle, None)
        self._counted()

    def taken_out(self) -> list[WorkerHandle]:
        return list(self._out)

    @property
    def in_rotation(self) -> int:
        return len(self._by_identity) - len(self._out)

    def _changed(self) -> None:
        self.version += 1
        self._registered = None
        self._counted()

    def _counted(self) -> None:
        self._ready_gauge.set(self.in_rotation)
        self._failing_gauge.set(len(self._out))

    def by_worker_id(self, worker_id: str) -> list[WorkerHandle]:
        return [h for h in self._by_identity.values() if h.hello.worker_id == worker_id]

    def registered(self) -> tuple[WorkerHandle, ...]:
        """Every registered worker, in rotation or taken out as failing (`WorkerHandle.ready` tells which); rebuilt only
        when the set changes. A snapshot: a caller may remove workers as it goes through it."""
        if self._registered is None:
            self._registered = tuple(self._by_identity.values())
        return self._registered

    def running_images(self) -> int:
        """Images in batches sent to the registered workers, not yet answered."""
        return sum(len(jobs) for worker in self.registered() for jobs in worker.inflight.values())

    def silent_since(self, cutoff: float) -> list[WorkerHandle]:
        return [h for h in self._by_identity.values() if h.last_seen < cutoff]
