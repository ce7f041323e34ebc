"""Admission: one validation for every front door, then a bounded queue shared fairly among clients.

A spec that passes becomes an AdmittedRequest with its defaults filled in
(size, steps, seeds, deadline); one that does not (a size, or a step count the
workers' model cannot run exactly) gets an Error naming the field, and a full engine answers Busy. Nothing here waits.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable

from engine.dispatch.client_shares import ClientShares
from engine.dispatch.jobs import AdmittedRequest
from engine.dispatch.queue_pace import QueuePace
from engine.fleet.registry import WorkerRegistry
from protocols.client_messages import Busy, Error, Generate
from protocols.limits import MAX_SEED
from workers.limits import BACKEND_SIZES, DEFAULT_STEPS, SizeLimits, input_refusal


class Admission:
    def __init__(
        self,
        registry: WorkerRegistry,
        fallback_backend: str,
        max_queue: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`clock`: what admission times, the queue's pace and the clients' waits are read on."""
        self._registry = registry
        self._max_queue = max_queue
        self._clock = clock
        # how fast answers free room: a refusal says when there will be room for it
        self._pace = QueuePace(clock)
        self._shares = ClientShares(max_queue, self._pace.retry_s, clock)
        self._fallback = BACKEND_SIZES.get(fallback_backend, BACKEND_SIZES["tiny"])
        self._limits_version = -1
        self._limits = self._fallback
        self._refused_steps: frozenset[int] = frozenset()

    def size_limits(self) -> SizeLimits:
        """What every ready worker accepts (before any is ready: the configured backend's)."""
        self._read_workers()
        return self._limits

    def refused_steps(self) -> frozenset[int]:
        """The step counts some ready worker cannot run exactly (every worker runs one model: all the same ones)."""
        self._read_workers()
        return self._refused_steps

    def _read_workers(self) -> None:
        if self._limits_version != self._registry.version:
            self._limits = self._size_limits()
            self._refused_steps = frozenset(n for w in self._registry.registered() for n in w.hello.refused_steps)
            self._limits_version = self._registry.version

    def _size_limits(self) -> SizeLimits:
        workers = [w.hello for w in self._registry.registered()]
        if not workers:
            return self._fallback
        min_size, max_size = max(h.min_size for h in workers), min(h.max_size for h in workers)
        # a mixed fleet: the default most of its workers use, within what all of them take (the first one's
        # could be outside, and every request without a size would be refused)
        defaults = Counter(h.default_size for h in workers)
        usual = min(defaults, key=lambda size: (-defaults[size], size))
        return SizeLimits(min_size=min_size, max_size=max_size, default_size=min(max(usual, min_size), max_size))

    def default_steps(self) -> int:
        workers = self._registry.registered()
        return workers[0].hello.default_steps if workers else DEFAULT_STEPS

    def check(self, spec: Generate, queued: int, client: str = "") -> AdmittedRequest | Error | Busy:
        """`queued`: the images admitted and not answered; `client`: who sent it, as its front door names clients
        (engine/dispatch/client_shares.py). An admitted request holds its images' room until it is answered."""
        limits = self.size_limits()
        width = spec.width or limits.default_size
        height = spec.height or limits.default_size
        steps = spec.steps or self.default_steps()
        # a step count refused now rather than run: a worker ran N + 1 steps and cached them as N. One admitted before
        # any worker said hello is refused in the same words once routed (engine/dispatch/dispatcher.py)
        if refused := input_refusal(width, height, steps, limits, self.refused_steps()):
            return Error(spec.request_id, *refused)
        if spec.n > self._max_queue:
            # Busy would have the client retry for ever: no queue this small ever has room for it. HTTP names `n` for
            # this code (engine/http/api.py, _ADMISSION_PARAMS): give another refusal a code of its own
            return Error(
                spec.request_id,
                "invalid_request",
                f"n {spec.n} is more images than this engine queues at once (--max-queue {self._max_queue})",
            )
        if (refused := self._shares.refusal(client, spec.n, queued)) is not None:
            return Busy(spec.request_id, refused.retry_s * 1000, refused.reason)
        now = self._clock()
        first_seed = spec.seed if spec.seed is not None else random.randrange(MAX_SEED)
        request = AdmittedRequest(
            spec=spec,
            width=width,
            height=height,
            steps=steps,
            # seeds run through every value a client may ask for, 0 to MAX_SEED, and wrap past the top
            seeds=[(first_seed + i) % (MAX_SEED + 1) for i in range(spec.n)],
            admitted_at=now,
            deadline=now + spec.slo_ms / 1000.0 if spec.slo_ms else None,
            future=asyncio.get_running_loop().create_future(),
            client=client,
        )
        self._shares.add(client, spec.n)
        self._pace.admitted(spec.n)
        request.future.add_done_callback(lambda _: self._answered(client, spec.n))
        return request

    def _answered(self, client: str, images: int) -> None:
        """The request's room is free."""
        self._shares.remove(client, images)
        self._pace.freed(images)
