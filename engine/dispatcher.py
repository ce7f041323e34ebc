"""The dispatcher: routes jobs to workers, forms batches, and sees every job to its end.

It owns every live job. Each job is in exactly one place: waiting for its level
to be chosen (admitted, not yet routed), the pending queue (no worker can take
it yet), a worker's queue, or a batch sent to a worker. A worker lost takes
nothing with it: its jobs are routed again, or failed explicitly once they have
been tried `max_attempts` times.

Route-and-batch: while some worker at the job's level is idle, jobs spread over
the idle ones (batch 1, lowest latency); once all are busy, a worker idle at
another level takes the job (a batch carries its own level, so nothing waits
while a worker is free); else jobs go to the worker at the level whose queue is
longest but still short of a full batch, so batches fill.
A batch is the largest that still meets its head's deadline; a job that cannot
meet its deadline any more moves up to its fallback level when it has one (the
neighbour's highest stored latent; argus only) and would make it there, else it
is answered `deadline_exceeded` at once (unless the engine is told to serve late).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from controller.profiles import LatencyProfile
from engine.config import DispatchConfig
from engine.jobs import AdmittedRequest, Job
from engine.metrics import EngineMetrics
from engine.worker_registry import WorkerHandle, WorkerRegistry
from protocols.client_messages import Cancelled, ImageResult
from protocols.worker_messages import (
    Abort,
    BatchDone,
    Generate,
    GenerateItem,
    ItemCancelled,
    ItemDone,
    ItemFailed,
    ItemOutcome,
)

log = logging.getLogger("argus.dispatcher")

SendToWorker = Callable[[WorkerHandle, object], bool]
OnImage = Callable[[Job, ItemDone], None]


class Dispatcher:
    def __init__(
        self,
        registry: WorkerRegistry,
        send: SendToWorker,
        metrics: EngineMetrics,
        config: DispatchConfig,
        clock: Callable[[], float] = time.monotonic,
        profile: LatencyProfile | None = None,
        on_image: OnImage | None = None,
        escalate: bool = False,
    ):
        self._registry = registry
        self._profile = profile
        self._on_image = on_image
        self._escalate = escalate
        self._send = send
        self._metrics = metrics
        self._config = config
        self._clock = clock
        self._pending: deque[Job] = deque()
        self._live: dict[str, Job] = {}
        self._batch_ids = itertools.count(1)
        # workers with nothing queued or running, by level (insertion-ordered sets). Entries go stale when a
        # worker gets work or changes level and are dropped or moved when met: a pick is O(1), not a scan of
        # a thousand workers
        self._idle: dict[int, dict[WorkerHandle, None]] = {}
        # read when scraped: no gauge update on the request path
        metrics.queued_images.set_function(lambda: len(self._live))

    @property
    def outstanding_images(self) -> int:
        return len(self._live)

    def has_room_for(self, images: int) -> bool:
        return len(self._live) + images <= self._config.max_queue

    # -- requests ------------------------------------------------------------
    def admit(self, request: AdmittedRequest) -> None:
        """Counts the request's images against the queue bound; they wait for `route`."""
        request.future.add_done_callback(lambda _: self._retire(request))
        for job in request.jobs:
            self._live[job.job_id] = job

    def route(
        self,
        request: AdmittedRequest,
        level: int,
        latent: object,
        similarity: float | None,
        fallback: tuple[int, object] | None = None,
    ) -> None:
        """The request's level is chosen (and its neighbour's latent fetched): send its images on."""
        if request.done:
            return
        for job in request.jobs:
            job.level, job.latent, job.similarity = level, latent, similarity
            job.fallback = fallback if self._escalate else None
            self._route(job)

    def cancel(self, request: AdmittedRequest) -> None:
        request.finish(Cancelled(request.spec.request_id))

    def cancel_all(self) -> None:
        for request in {job.request for job in self._live.values()}:
            self.cancel(request)

    def _retire(self, request: AdmittedRequest) -> None:
        """The request has its reply: drop what is left of it, abort what runs."""
        aborts: dict[WorkerHandle, list[str]] = {}
        for job in request.jobs:
            if self._live.pop(job.job_id, None) is None:
                continue
            if job.worker is None:
                self._discard(self._pending, job)
            elif job.batch_id is None:
                self._discard(job.worker.queue, job)
                self._note_if_idle(job.worker)
            else:
                # stays in its batch until the worker answers; the answer is then ignored
                aborts.setdefault(job.worker, []).append(job.job_id)
        for worker, job_ids in aborts.items():
            if worker.ready:
                self._send(worker, Abort(job_ids))

    @staticmethod
    def _discard(queue: deque[Job], job: Job) -> None:
        try:
            queue.remove(job)
        except ValueError:
            pass

    # -- routing and batching ------------------------------------------------
    def _route(self, job: Job) -> None:
        worker = self._pick_worker(job)
        job.batch_id = None
        job.worker = worker
        if worker is None:
            self._pending.append(job)
            return
        worker.queue.append(job)
        self._pump(worker)

    def _pick_worker(self, job: Job) -> WorkerHandle | None:
        ready = self._registry.ready()
        if not ready:
            return None
        # a worker serving the job's level keeps batches uniform; any worker can run any level
        idle = self._idle_worker(job.level)
        if idle is not None:
            return idle
        picked = self._pick_among(ready, job.level)
        if picked is None or picked.queue or picked.inflight:
            # work-conserving: a worker idle at another level runs the job now rather than let it queue
            idle = self._idle_worker(None)
            if idle is not None:
                return idle
        return picked if picked is not None else self._pick_among(ready, None)

    def _idle_worker(self, level: int | None) -> WorkerHandle | None:
        """A worker with nothing queued or running, at `level` (None: any level), or None."""
        for bucket_level in [level] if level is not None else list(self._idle):
            bucket = self._idle.get(bucket_level, {})
            while bucket:
                worker = next(iter(bucket))
                del bucket[worker]
                if not (worker.ready and not worker.queue and not worker.inflight):
                    continue  # it got work since, or left: it is noted again once idle
                if worker.level != bucket_level:
                    self._idle.setdefault(worker.level, {})[worker] = None  # it changed level
                    continue
                return worker
        return None

    def _note_if_idle(self, worker: WorkerHandle) -> None:
        if worker.ready and not worker.queue and not worker.inflight:
            self._idle.setdefault(worker.level, {})[worker] = None

    def _pick_among(self, ready: Sequence[WorkerHandle], level: int | None) -> WorkerHandle | None:
        """One pass: the idle worker with the fewest images in flight (an empty one at once), else the one
        whose queue is longest short of a full batch, else the least loaded."""
        depth = self._config.inflight_batches_per_worker
        idle = idle_load = filling = filling_len = least = least_load = None
        for w in ready:
            if level is not None and w.level != level:
                continue
            queued = len(w.queue)
            inflight = w.inflight
            if not queued and len(inflight) < depth:
                if not inflight:
                    return w
                load = sum(len(jobs) for jobs in inflight.values())
                if idle is None or load < idle_load:
                    idle, idle_load = w, load
            elif idle is None:
                if queued < w.hello.max_batch and (filling is None or queued > filling_len):
                    filling, filling_len = w, queued
                load = queued + sum(len(jobs) for jobs in inflight.values())
                if least is None or load < least_load:
                    least, least_load = w, load
        return idle or filling or least

    def _pump(self, worker: WorkerHandle) -> None:
        while worker.ready and worker.queue and len(worker.inflight) < self._config.inflight_batches_per_worker:
            jobs = self._take_batch(worker)
            if jobs:
                self._send_batch(worker, jobs)
        self._note_if_idle(worker)

    def _take_batch(self, worker: WorkerHandle) -> list[Job]:
        now = self._clock()
        # the batch starts once what the worker holds is done
        wait = max(0.0, worker.busy_until - now)
        head = worker.queue.popleft()
        if not self._still_wanted(head, now, wait):
            return []
        batch = [head]
        key = head.key
        limit = self._batch_limit(head, worker.hello.max_batch, now, wait)
        kept: deque[Job] = deque()
        while worker.queue and len(batch) < limit:
            job = worker.queue.popleft()
            # checked again after _still_wanted: a job it moves up a level waits for a batch of that level
            if job.key == key and self._still_wanted(job, now, wait) and job.key == key:
                batch.append(job)
            elif job.job_id in self._live:
                kept.append(job)
        kept.extend(worker.queue)
        worker.queue = kept
        return batch

    def _batch_limit(self, head: Job, max_batch: int, now: float, wait: float) -> int:
        """The largest batch that still meets the head's deadline, by the latency profile."""
        left = head.request.seconds_left(now)
        if left is None or not self._profiled(head.level):
            return max_batch
        fitting = self._profile.best_batch(head.level, left - wait)
        return max(1, min(max_batch, fitting))

    def _still_wanted(self, job: Job, now: float, wait: float = 0.0) -> bool:
        """False (and the request answered) for a job that is done for, or can no longer meet its deadline."""
        if job.request.done:
            return False
        left = job.request.seconds_left(now)
        if left is None:
            return True
        if left <= 0:
            job.request.fail("deadline_exceeded", "the request's deadline passed before it could be served")
            return False
        if not self._config.serve_late and self._profiled(job.level):
            if wait + self._profile.latency(job.level, 1) > left and not self._escalated(job, left - wait):
                job.request.fail("deadline_exceeded", "the request can no longer be served within its deadline")
                return False
        return True

    def _escalated(self, job: Job, budget_s: float) -> bool:
        """Moves a job too slow at its level up to its fallback level if it makes the deadline there."""
        if job.fallback is None:
            return False
        level, latent = job.fallback
        if not self._profiled(level) or self._profile.latency(level, 1) > budget_s:
            return False
        job.level, job.latent, job.fallback = level, latent, None
        self._metrics.escalated.inc()
        return True

    def _profiled(self, level: int) -> bool:
        return self._profile is not None and level in self._profile.latency_s

    def _expect_busy(self, worker: WorkerHandle, level: int, size: int, now: float) -> None:
        if self._profiled(level):
            start = max(now, worker.busy_until)
            worker.busy_until = start + self._profile.latency(level, min(size, self._profile.max_batch))

    def _send_batch(self, worker: WorkerHandle, jobs: list[Job]) -> None:
        batch_id = next(self._batch_ids)
        head = jobs[0]
        key = head.key
        message = Generate(
            batch_id=batch_id,
            level=key.level,
            steps=key.steps,
            width=key.width,
            height=key.height,
            guidance_scale=key.guidance_scale,
            output_format=key.output_format,
            items=[GenerateItem(job.job_id, job.prompt, job.seed, job.latent, job.similarity) for job in jobs],
        )
        now = self._clock()
        self._expect_busy(worker, key.level, len(jobs), now)
        worker.inflight[batch_id] = jobs
        for job in jobs:
            job.batch_id = batch_id
            job.sent_at = now
            job.attempts += 1
            self._metrics.queue_seconds.observe(now - job.request.admitted_at)
        if not self._send(worker, message):
            self.worker_lost(worker, "unreachable")

    # -- worker events -------------------------------------------------------
    def worker_ready(self, worker: WorkerHandle) -> None:
        waiting, self._pending = self._pending, deque()
        for job in waiting:
            if job.job_id in self._live:
                self._route(job)
        self._pump(worker)

    def worker_level_set(self, worker: WorkerHandle, level: int) -> None:
        worker.level = level
        self._note_if_idle(worker)

    def worker_lost(self, worker: WorkerHandle, cause: str) -> None:
        if not worker.ready:
            return
        self._registry.remove(worker)
        self._metrics.worker_losses.labels(cause).inc()
        held = worker.held_jobs()
        worker.queue.clear()
        worker.inflight.clear()
        log.warning("worker %s lost (%s) holding %d images", worker.name, cause, len(held))
        for job in held:
            self._reroute_or_fail(job)

    def _reroute_or_fail(self, job: Job) -> None:
        if job.job_id not in self._live:
            return
        if job.attempts >= self._config.max_attempts:
            job.request.fail("worker_lost", f"the workers running this image failed {job.attempts} times")
            return
        if job.attempts:
            self._metrics.redispatched.inc()
        self._route(job)

    def batch_done(self, worker: WorkerHandle, done: BatchDone) -> None:
        jobs = worker.inflight.pop(done.batch_id, None)
        if jobs is None:
            return  # a late answer for a batch already given up on
        if not worker.inflight:
            worker.busy_until = self._clock()  # idle now, whatever the estimate said
        by_id = {job.job_id: job for job in jobs}
        for outcome in done.outcomes:
            job = by_id.pop(outcome.request_id, None)
            if job is not None and job.job_id in self._live:
                self._settle(worker, job, outcome)
        for job in by_id.values():
            # a worker that answers a batch but leaves items out still owes them
            self._settle(worker, job, ItemCancelled(job.job_id))
        self._pump(worker)

    def _settle(self, worker: WorkerHandle, job: Job, message: ItemOutcome) -> None:
        if isinstance(message, ItemCancelled):
            # the worker stopped without the client asking: the image is still owed
            self._reroute_or_fail(job)
            return
        self._live.pop(job.job_id)
        if isinstance(message, ItemDone):
            self._metrics.images.labels(str(message.level)).inc()
            if self._on_image is not None:
                self._on_image(job, message)
            job.request.image_done(
                job,
                ImageResult(
                    image=message.image,
                    seed=job.seed,
                    level=message.level,
                    similarity=job.similarity,
                    queue_ms=(job.sent_at - job.request.admitted_at) * 1000.0,
                    run_ms=message.run_ms,
                    steps_run=message.steps_run,
                    worker=worker.name,
                    quality=message.quality,
                ),
            )
        elif isinstance(message, ItemFailed):
            job.request.fail(message.code, message.message)

    # -- time ----------------------------------------------------------------
    def sweep(self) -> None:
        """Answers jobs whose deadline passed while queued, and jobs no worker could take."""
        now = self._clock()
        for job in list(self._pending):
            left = job.request.seconds_left(now)
            if left is not None and left <= 0:
                job.request.fail("deadline_exceeded", "the request's deadline passed while it waited for a worker")
            elif now - job.request.admitted_at > self._config.no_worker_timeout_s:
                job.request.fail("no_worker", "no worker was available to serve this request")
        for worker in self._registry.ready():
            if not worker.queue:
                continue
            wait = max(0.0, worker.busy_until - now)
            for job in list(worker.queue):
                if not self._still_wanted(job, now, wait):
                    self._discard(worker.queue, job)
            self._note_if_idle(worker)
