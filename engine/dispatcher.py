"""The dispatcher: routes jobs to workers, forms batches, and sees every job to its end.

It owns every live job. Each job is in exactly one place: waiting for its level
to be chosen (admitted, not yet routed), the pending queue (no worker can take
it yet), a worker's queue, or a batch sent to a worker. A worker lost takes
nothing with it: its jobs are routed again, or failed explicitly once they have
been tried `max_attempts` times.

Route-and-batch: while some worker at the job's level is idle, jobs spread over
the idle ones (batch 1, lowest latency); once all are busy, a worker idle at
another level takes the job (a batch carries its own level, so nothing waits
while a worker is free); else the job queues here, on the worker at its level
expected to be free first, and jobs of one kind that queue together leave as
one batch. A batch goes to a busy worker only when its running one is about
to end (PIPELINE_HORIZON_S): a job sent behind a long batch could not move. A
worker with room serves the most urgent job queued anywhere (the one that must
start soonest to meet its deadline), so no job waits behind a busy worker
while another could take it.

Moving up a level (argus only; a job's fallbacks are the latents its neighbour
has above its level): a job the plan gave a level below its K* goes back to K*
when it must queue, since that upgrade is only worth spare capacity. A job
that would miss its deadline behind the jobs queued before it moves up to the
lowest fallback that makes it. A job that cannot make it any more is answered
`deadline_exceeded` at once (unless the engine is told to serve late). A batch
is the largest that still meets the deadline of every job in it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

from controller.profiles import LatencyProfile, ProfileLatency
from engine.config import DispatchConfig
from engine.dispatch_index import HEAP_SLACK, FreeAt, IdleWorkers, QueuedWork, SentDeadlines
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

# a second batch goes to a busy worker only when its running one should end this soon (by the latency
# profile): enough to hide the round trip between batches, far below any real generation
PIPELINE_HORIZON_S = 0.005

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
        *,
        slo_s: float,
    ):
        self._registry = registry
        self._profile = profile
        # a request's steps need not be the profile's N: its time is read off the profile's fit in steps run
        self._latency = ProfileLatency(profile) if profile is not None else None
        self._on_image = on_image
        self._escalate = escalate
        # a request sent without a deadline is served as if due this long after it was admitted
        self._slo_s = slo_s
        self._send = send
        self._metrics = metrics
        self._config = config
        self._clock = clock
        self._pending: deque[Job] = deque()
        self._live: dict[str, Job] = {}
        # admitted, their level still being chosen on the cache thread (a heavy embedder can take a while)
        self._choosing: dict[AdmittedRequest, None] = {}
        self._batch_ids = itertools.count(1)
        self._idle = IdleWorkers()
        # every job queued on a worker, by the latest time it can start and still meet its deadline (then
        # in the order queued); entries go stale when the job leaves the queue and are dropped when met.
        # A worker with room serves the most urgent, wherever it queued
        self._queued: list[tuple[float, int, Job]] = []
        self._queued_order = itertools.count()
        # a request whose deadline passes while its images run (a worker slower than its profile, or hung) is
        # answered then, as a queued one is
        self._sent_deadlines = SentDeadlines()
        # the seconds of those jobs by the same key, and the workers by when each should be free: what a job that
        # must queue is judged by, looked up without a pass over the queue or the fleet
        self._queued_work = QueuedWork(self._image_seconds)
        self._free_at = FreeAt()
        # read when scraped: no gauge update on the request path
        metrics.queued_images.set_function(lambda: len(self._live))
        metrics.running_images.set_function(self._running_images)

    def _running_images(self) -> int:
        return sum(len(jobs) for worker in self._registry.ready() for jobs in worker.inflight.values())

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
        self._choosing[request] = None

    def route(
        self,
        request: AdmittedRequest,
        level: int,
        latent: object,
        similarity: float | None,
        fallbacks: tuple[tuple[int, object], ...] = (),
        k_star: int = 0,
    ) -> None:
        """The request's level is chosen (and its neighbour's latents fetched): send its images on."""
        self._choosing.pop(request, None)
        if request.done:
            return
        touched: dict[WorkerHandle, None] = {}
        for job in request.jobs:
            job.level, job.latent, job.similarity, job.k_star = level, latent, similarity, k_star
            job.fallbacks = fallbacks if self._escalate else ()
            worker = self._enqueue(job)
            if worker is not None:
                touched[worker] = None
        # all its images queued before any is sent: those that share a worker leave as one batch (sent one by
        # one, the second would be judged as waiting behind the first, and the request could fail for it).
        # Each worker first sends one batch, so images given to different idle workers run side by side rather
        # than the first worker taking them all as the most urgent jobs queued anywhere. That batch too is led by
        # the most urgent job: led by a laxer one queued before it, a tight job could only join it, and end late.
        for worker in touched:
            if worker.ready and self._has_room(worker, self._clock()):
                self._send_most_urgent(worker)
        for worker in touched:
            self._pump(worker)

    def cancel(self, request: AdmittedRequest) -> None:
        request.finish(Cancelled(request.spec.request_id))

    def cancel_all(self) -> None:
        for request in {job.request for job in self._live.values()}:
            self.cancel(request)

    def _retire(self, request: AdmittedRequest) -> None:
        """The request has its reply: drop what is left of it, abort what runs."""
        self._choosing.pop(request, None)
        aborts: dict[WorkerHandle, list[str]] = {}
        for job in request.jobs:
            if self._live.pop(job.job_id, None) is None:
                continue
            if job.worker is None:
                self._discard(self._pending, job)
            elif job.batch_id is None:
                self._discard(job.worker.queue, job)
                self._queued_work.remove(job)
                self._file(job.worker)
            else:
                # stays in its batch until the worker answers; the answer is then ignored
                aborts.setdefault(job.worker, []).append(job.job_id)
        for worker, job_ids in aborts.items():
            if worker.ready:
                self._send(worker, Abort(job_ids))

    @staticmethod
    def _discard(queue: deque[Job], job: Job) -> None:
        # not remove() alone: for an item it lacks, a deque names it by its repr, and a job's runs over every
        # request, job and worker it reaches (a job answered as it was routed has a worker but is in no queue)
        if job in queue:
            queue.remove(job)

    # -- routing and batching ------------------------------------------------
    def _route(self, job: Job) -> None:
        worker = self._enqueue(job)
        if worker is not None:
            self._pump(worker)

    def _enqueue(self, job: Job) -> WorkerHandle | None:
        """Queues the job on a worker (None: it waits for one, or it was answered) without sending anything."""
        worker = self._pick_worker(job)
        job.batch_id = None
        job.worker = worker
        if worker is None:
            job.waiting_since = self._clock()
            self._pending.append(job)
            return None
        now = self._clock()
        if not self._has_room(worker, now):
            self._hold_at_best_level(job)
            # it waits for a worker: if that is too long, it moves up a level or is answered now, not when it
            # reaches the head of the queue
            if job.request.deadline is not None:
                wait = self._soonest_free(now)
                if not self._still_wanted(job, now, wait, wait + self._work_before(job)):
                    return None
        worker.queue.append(job)
        self._file(worker)
        start_by = self._start_by(job)
        heapq.heappush(self._queued, (start_by, next(self._queued_order), job))
        self._queued_work.add(job, start_by)
        if len(self._queued) > 2 * len(self._live) + HEAP_SLACK:
            self._compact_queued()
        return worker

    def _compact_queued(self) -> None:
        """Drops the heap entries of jobs no longer queued. Entries leave the heap only from its top, so under a
        steady stream of urgent jobs, those of jobs that could wait long would pile up, each holding its
        finished request and images; a job routed again has its latest entry kept."""
        latest = {entry[2].job_id: entry for entry in sorted(self._queued, key=lambda entry: entry[1])}
        self._queued = [entry for entry in latest.values() if self._is_queued(entry[2])]
        heapq.heapify(self._queued)

    def _is_queued(self, job: Job) -> bool:
        """Waiting in a worker's queue: not sent, not answered (its request may be done before its retirement
        runs), not waiting for a worker."""
        return job.worker is not None and job.batch_id is None and not job.request.done and job.job_id in self._live

    def _start_by(self, job: Job) -> float:
        """The latest time the job can start at its level and still meet its deadline. Jobs are served in this
        order: a miss, which runs all steps and cannot move up a level, goes before a hit that came a little
        earlier but can wait longer. A request sent without a deadline is ranked as due one SLO (the one the
        controller plans for) after it was admitted: it is never answered late, and it no longer waits for as
        long as requests with a deadline keep coming."""
        deadline = job.request.deadline
        if deadline is None:
            deadline = job.request.admitted_at + self._slo_s
        return deadline - (self._seconds(job, job.level) if self._profiled(job.level) else 0.0)

    def _pick_worker(self, job: Job) -> WorkerHandle | None:
        if not self._registry.ready():
            return None
        # a worker serving the job's level keeps batches uniform; any worker can run any level, and one idle at
        # another level runs the job now rather than let it queue (work-conserving)
        for level in (job.level, None):
            idle = self._idle.pick(level)
            if idle is not None:
                return idle
        # all busy: the one at its level free first (with room for a batch now, if one has), its queue counted on
        # the latency profile; with none at its level, the one at any level whose sent batches end first
        now = self._clock()
        one_image_s = self._profile.latency(job.level, 1) if self._profiled(job.level) else 0.0
        picked = self._free_at.soonest(now, job.level, one_image_s)
        return picked if picked is not None else self._free_at.soonest(now, None, 0.0)

    def _file(self, worker: WorkerHandle) -> None:
        """Files the worker where picks find it after a change to its level, queue or batches: by when it should
        be free, and among the idle workers if it is one."""
        if not worker.ready:
            return
        self._free_at.file(worker)
        if not worker.queue and not worker.inflight:
            self._idle.add(worker)

    def _pump(self, worker: WorkerHandle) -> None:
        while worker.ready and self._has_room(worker, self._clock()) and self._send_most_urgent(worker):
            pass
        self._file(worker)

    def _send_most_urgent(self, worker: WorkerHandle) -> bool:
        """Sends the worker a batch led by the most urgent job queued anywhere. False: no job is queued."""
        if not self._bring_most_urgent(worker):
            return False
        jobs = self._take_batch(worker)
        if jobs:
            self._send_batch(worker, jobs)
        return True

    def _has_room(self, worker: WorkerHandle, now: float) -> bool:
        """Whether a batch can go to the worker now: it holds fewer than `inflight_batches_per_worker`,
        and what it holds ends within PIPELINE_HORIZON_S. A batch sent behind a long one is stuck
        there, where a job kept here goes to whichever worker frees first."""
        if not worker.inflight:
            return True
        return (
            len(worker.inflight) < self._config.inflight_batches_per_worker
            and worker.busy_until - now <= PIPELINE_HORIZON_S
        )

    def _bring_most_urgent(self, worker: WorkerHandle) -> bool:
        """Puts the most urgent job queued anywhere at the head of the worker's queue, with the jobs queued
        beside it that share its batch key, up to a batch. False: no job is queued."""
        while self._queued:
            job = self._queued[0][2]
            if not self._is_queued(job):
                heapq.heappop(self._queued)
                continue
            owner = job.worker
            if owner is worker:
                if worker.queue[0] is not job:
                    worker.queue.remove(job)
                    worker.queue.appendleft(job)
                return True
            key = job.key
            taken = [job, *(other for other in owner.queue if other is not job and other.key == key)]
            taken = taken[: worker.hello.max_batch]
            moving = set(map(id, taken))
            owner.queue = deque(other for other in owner.queue if id(other) not in moving)
            self._file(owner)
            for other in taken:
                other.worker = worker
            worker.queue.extendleft(reversed(taken))
            return True
        return False

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
                # a job joins only a batch its own deadline allows, and keeps it that small: the head's deadline
                # is not always the tightest (a job without one, or one moved up a level, keeps its place)
                fits = self._batch_limit(job, limit, now, wait)
                if fits > len(batch):
                    batch.append(job)
                    limit = fits
                    continue
            if job.job_id in self._live:
                kept.append(job)
        kept.extend(worker.queue)
        worker.queue = kept
        return batch

    def _batch_limit(self, job: Job, max_batch: int, now: float, wait: float) -> int:
        """The largest batch that still meets the job's deadline, by the latency profile. One served late
        (--serve-late) that cannot meet it at all gains nothing from a small batch: it takes a whole one, and the
        jobs late behind it are served at the fleet's full rate."""
        left = job.request.seconds_left(now)
        if left is None or not self._profiled(job.level):
            return max_batch
        fitting = (b for b in range(max_batch, 1, -1) if self._seconds(job, job.level, b) <= left - wait)
        late = self._config.serve_late and self._seconds(job, job.level) > left - wait
        return next(fitting, max_batch if late else 1)

    def _still_wanted(self, job: Job, now: float, wait: float = 0.0, ahead: float | None = None) -> bool:
        """False (and the request answered) for a job that is done for, or can no longer meet its deadline.

        `wait`: until its worker is free; `ahead`: until the jobs queued before it are done too, each
        counted as if it ran alone (batching only shortens it). A job that would be late behind them
        moves up to its fallback now (argus), while that still makes its deadline: moved early, it
        leaves the time it saves to the jobs behind it, misses among them, which cannot move up.
        """
        if job.request.done:
            return False
        left = job.request.seconds_left(now)
        if left is None or self._config.serve_late:
            return True
        if left <= 0:
            self._deadline_exceeded(job.request, "queued", "the request's deadline passed before it could be served")
            return False
        if not self._profiled(job.level):
            return True
        latency = self._seconds(job, job.level)
        if ahead is not None and ahead > wait and ahead + latency > left:
            self._escalated(job, left - ahead)
            latency = self._seconds(job, job.level)
        if wait + latency > left and not self._escalated(job, left - wait):
            self._deadline_exceeded(job.request, "predicted", "the request can no longer be served within its deadline")
            return False
        return True

    def _deadline_exceeded(self, request: AdmittedRequest, cause: str, message: str) -> None:
        if request.fail("deadline_exceeded", message):
            self._metrics.deadline_exceeded_by(cause).inc()

    def _queued_seconds(self, jobs: Iterable[Job]) -> float:
        """How long `jobs` take one by one at their levels (0 for a level without a profile)."""
        return sum(self._image_seconds(job.level, job.request.steps) for job in jobs)

    def _image_seconds(self, level: int, steps: int) -> float:
        """How long one image of `steps` steps takes at `level` (0 for a level without a profile)."""
        return self._latency.seconds(level, steps, 1) if self._profiled(level) else 0.0

    def _seconds(self, job: Job, level: int, batch: int = 1) -> float:
        """How long a batch of `batch` jobs like `job` takes at `level`, by the latency profile."""
        return self._latency.seconds(level, job.request.steps, batch)

    def _soonest_free(self, now: float) -> float:
        """Seconds until the first ready worker is free: a freed worker takes the most urgent job queued
        anywhere, whichever worker it was queued on."""
        return self._free_at.first_free_in(now)

    def _work_before(self, job: Job) -> float:
        """Seconds the ready workers need, shared among them, for the jobs queued anywhere that go first (the job,
        not queued yet, is not among them)."""
        return self._queued_work.seconds_up_to(self._start_by(job)) / max(1, len(self._registry.ready()))

    def _hold_at_best_level(self, job: Job) -> None:
        """A job the plan gave a level below its K* (an upgrade, paid for by spare capacity) goes back up to
        K* when it must wait: capacity is not spare while jobs queue."""
        if job.level < job.k_star:
            best = [fallback for fallback in job.fallbacks if fallback[0] <= job.k_star]
            if best:
                self._move_up(job, best[-1])

    def _escalated(self, job: Job, budget_s: float) -> bool:
        """Moves a job too slow at its level up to the lowest of its fallbacks that makes the deadline."""
        for fallback in job.fallbacks:
            if self._profiled(fallback[0]) and self._seconds(job, fallback[0]) <= budget_s:
                self._move_up(job, fallback)
                if not job.escalated:  # the metric counts images: one moved up twice is still one image
                    job.escalated = True
                    self._metrics.escalated.inc()
                return True
        return False

    def _move_up(self, job: Job, fallback: tuple[int, object]) -> None:
        job.level, job.latent = fallback
        job.fallbacks = tuple(higher for higher in job.fallbacks if higher[0] > job.level)
        self._queued_work.moved_up(job)

    def _profiled(self, level: int) -> bool:
        return self._profile is not None and level in self._profile.latency_s

    def _expect_busy(self, worker: WorkerHandle, jobs: list[Job], now: float) -> None:
        level = jobs[0].level
        if self._profiled(level):
            start = max(now, worker.busy_until)
            worker.busy_until = start + self._seconds(jobs[0], level, len(jobs))

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
            output_compression=key.output_compression,
            items=[GenerateItem(job.job_id, job.prompt, job.seed, job.latent, job.similarity) for job in jobs],
        )
        now = self._clock()
        self._expect_busy(worker, jobs, now)
        worker.inflight[batch_id] = jobs
        for job in jobs:
            self._queued_work.remove(job)
            job.batch_id = batch_id
            job.sent_at = now
            job.attempts += 1
        if not self._config.serve_late:
            self._sent_deadlines.watch(jobs, self._live)
        if not self._send(worker, message):
            self.worker_lost(worker, "unreachable")

    # -- worker events -------------------------------------------------------
    def worker_ready(self, worker: WorkerHandle) -> None:
        self._file(worker)  # before the jobs waiting for a worker are routed: they go to it
        waiting, self._pending = self._pending, deque()
        for job in waiting:
            if job.job_id in self._live:
                self._route(job)
        self._pump(worker)

    def worker_level_set(self, worker: WorkerHandle, level: int) -> None:
        worker.level = level
        self._file(worker)

    def worker_lost(self, worker: WorkerHandle, cause: str) -> None:
        if not worker.ready:
            return
        self._registry.remove(worker)
        self._free_at.drop(worker)
        self._idle.drop(worker)
        self._metrics.worker_losses.labels(cause).inc()
        held = worker.held_jobs()
        worker.queue.clear()
        worker.inflight.clear()
        log.warning("worker %s lost (%s) holding %d images", worker.name, cause, len(held))
        # all of them wait for a worker before any is routed: routing one can give another worker room, and
        # it takes the most urgent job queued anywhere, which must not be one still counted on the lost worker
        for job in held:
            self._queued_work.remove(job)
            job.worker = job.batch_id = None
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
        self._file(worker)  # the images it settles may be routed again, and find it free
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
            queued_s = job.sent_at - job.request.admitted_at  # until the run that made it was sent
            # the level it was sent at, not the one the worker names: a label takes only the engine's values
            self._metrics.images_at(job.level).inc()
            self._metrics.queue_seconds.observe(queued_s)
            if self._on_image is not None:
                try:
                    self._on_image(job, message)
                except Exception:  # caching what it passed through is a bonus: the image is the client's anyway
                    log.exception("handling image %s beyond its reply failed", job.job_id)
            job.request.image_done(
                job,
                ImageResult(
                    image=message.image,
                    seed=job.seed,
                    level=job.level,
                    similarity=job.similarity,
                    queue_ms=queued_s * 1000.0,
                    run_ms=message.run_ms,
                    steps_run=message.steps_run,
                    worker=worker.name,
                    quality=message.quality,
                    simulated=worker.hello.simulated,
                ),
            )
        elif isinstance(message, ItemFailed):
            # worker_error whatever code the worker names: a worker's code would become a metric label (one series
            # per value made up) and the client's HTTP status (a 429 or 504 for a failure of its own)
            job.request.fail("worker_error", message.message)

    # -- time ----------------------------------------------------------------
    def sweep(self) -> None:
        """Answers requests whose deadline passed while queued or running, and jobs no worker could take."""
        now = self._clock()
        if not self._config.serve_late:
            for request in list(self._choosing):
                left = request.seconds_left(now)
                if left is not None and left <= 0:
                    self._deadline_exceeded(
                        request, "queued", "the request's deadline passed while its level was chosen"
                    )
        for job_id in self._sent_deadlines.passed(now):
            job = self._live.get(job_id)
            # one given back since (its worker lost) is answered below, where it waits; one still sent: its answer,
            # should it come, is ignored, and what still runs is aborted (_retire)
            if job is not None and job.batch_id is not None:
                self._deadline_exceeded(
                    job.request, "running", "the request's deadline passed while its images were made"
                )
        for job in list(self._pending):
            left = job.request.seconds_left(now)
            if left is not None and left <= 0 and not self._config.serve_late:
                self._deadline_exceeded(
                    job.request, "no_worker", "the request's deadline passed while it waited for a worker"
                )
            elif now - job.waiting_since > self._config.no_worker_timeout_s:
                job.request.fail("no_worker", "no worker was available to serve this request")
        # every queued job in the order the workers will take them, each behind the ones before it, shared
        # among the workers
        workers = max(1, len(self._registry.ready()))
        wait = None  # until the soonest worker frees: only looked for when a queued job has a deadline
        before, seen = 0.0, set()
        for _, _, job in sorted(self._queued):
            if job.job_id in seen or not self._is_queued(job):
                continue
            seen.add(job.job_id)
            if job.request.deadline is not None:
                wait = self._soonest_free(now) if wait is None else wait
                if not self._still_wanted(job, now, wait, wait + before / workers):
                    self._discard(job.worker.queue, job)
                    self._queued_work.remove(job)
                    self._file(job.worker)
                    continue
            before += self._queued_seconds((job,))
