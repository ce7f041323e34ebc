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
start soonest to meet its deadline; while clients share the fleet, no sooner
than its client's fair share allows: `fair_share.py`), so no job waits behind a
busy worker while another could take it.

A worker whose batches keep failing is taken out of rotation (`failing_workers.py`): restarted if the
engine started it, else routed nothing for a while. What it queued goes elsewhere; what it failed stays failed.

Whether a job can still meet its deadline, how large its batch may be, and
moving it up a level to make it are judged in `timing.py`; the
look-ups that keep routing free of scans are in `index.py`, and the moves of jobs out of and back into a
worker's queue, none reading it more than once, in `queue_moves.py`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from controller.profiles import LatencyProfile
from controller.quality_estimate import QualityEstimate
from engine.config import DispatchConfig
from engine.dispatch import failing_workers
from engine.dispatch.batch_messages import BatchMessages
from engine.dispatch.index import FreeAt, SentDeadlines, SpreadOver, UrgencyOrder
from engine.dispatch.jobs import AdmittedRequest, Fallback, Job
from engine.dispatch.queue_moves import discard, gather_mates, put_back, take_out, take_with_mates
from engine.dispatch.timing import DispatchTiming
from engine.dispatch.worker_fit import as_asked, refusal
from engine.dispatch.worker_picks import WorkerPicks
from engine.fleet.registry import WorkerHandle, WorkerRegistry
from engine.fleet.worker_outlook import WAITED_IN_VAIN
from engine.logs.failed_batch_lines import FailedBatchLines
from engine.logs.loss_lines import LossLines
from engine.logs.request_names import clipped
from engine.metrics import EngineMetrics
from protocols.client_messages import Cancelled
from protocols.worker_messages import REFUSED, Abort, BatchDone, ItemCancelled, ItemDone, ItemFailed

log = logging.getLogger("argus.dispatcher")

# a second batch goes to a busy worker only when its running one should end this soon (by the latency
# profile): enough to hide the round trip between batches, far below any real generation
PIPELINE_HORIZON_S = 0.005

SendToWorker = Callable[[WorkerHandle, object], bool]
OnImage = Callable[[WorkerHandle, Job, ItemDone], None]


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
        quality: QualityEstimate,  # each image's expected quality, for its reply and /metrics
        latent_levels: tuple[int, ...] | None = None,  # the cache's levels, () without one; None: every level
    ):
        self._registry = registry
        self._quality = quality
        self._messages = BatchMessages(latent_levels)
        # set by the engine: kills a worker the engine started, for its launcher to start again; False for one started
        # by hand, which it cannot restart
        self.restart: Callable[[WorkerHandle], bool] = lambda worker: False
        # set by the engine: how long a job that finds no worker waits for one, and its answer after (WorkerOutlook)
        self.worker_wait: Callable[[float], tuple[float, str]] = lambda _: (config.no_worker_timeout_s, WAITED_IN_VAIN)
        # ids of workers killed as failing, until their slot's next hello or its launcher gives the slot up
        self._restarting: set[str] = set()
        self._on_image = on_image
        self._escalate = escalate
        self._send = send
        self._metrics = metrics
        self._config = config
        self._clock = clock
        self._pending: deque[Job] = deque()
        self._rerouting: deque[Job] | None = None  # jobs to route again, while _route_again runs
        # while requests are answered together (by the sweep, a cancel): their queued jobs, to take out at its end
        self._leaving: list[Job] | None = None
        self.loss_lines = LossLines()  # workers lost together, said in one line
        self._failed_batch_lines = FailedBatchLines(clock)
        self._live: dict[str, Job] = {}
        # the images of the requests admitted and not answered, made ones too (held for the reply): what --max-queue
        # bounds. Freed one by one as made, the room of a request of n admitted as many images again beside it
        self._unanswered_images = 0
        # admitted, their level still being chosen on the cache thread (a heavy embedder can take a while)
        self._choosing: dict[AdmittedRequest, None] = {}
        self._batch_ids = itertools.count(1)
        # every job queued on a worker, most urgent first: a worker with room serves the first, wherever it queued
        self._urgency = UrgencyOrder()
        # a request whose deadline passes as its images run (a worker slow, or hung) is answered then, as if queued
        self._sent_deadlines = SentDeadlines()
        # the workers by when each should be free, for the one a job that must queue goes to (and is judged by)
        # without a pass over the fleet
        free_at = FreeAt()
        self._timing = DispatchTiming(profile, registry, free_at, metrics, serve_late=config.serve_late, slo_s=slo_s)
        self._picks = WorkerPicks(registry, free_at, self._timing.queued_job_seconds, clock)
        # read when scraped: no gauge update on the request path
        metrics.queued_images.set_function(lambda: len(self._live))
        metrics.running_images.set_function(registry.running_images)
        metrics.sharing_clients.set_function(lambda: self._timing.sharing_clients(self._clock()))

    @property
    def outstanding_images(self) -> int:
        """The images of the requests admitted and not yet answered, made or not."""
        return self._unanswered_images

    def pace(self) -> float:
        """What the latency profile's times are multiplied by: the workers' own pace (engine/fleet/profile_drift.py)."""
        return self._timing.pace

    # -- requests ------------------------------------------------------------
    def admit(self, request: AdmittedRequest) -> None:
        """Counts the request's images against the queue bound; they wait for `route`."""
        request.on_answered = self._retire
        self._unanswered_images += len(request.jobs)
        for job in request.jobs:
            self._live[job.job_id] = job
        self._choosing[request] = None

    def route(
        self,
        request: AdmittedRequest,
        level: int,
        latent: object,
        similarity: float | None,
        fallbacks: tuple[Fallback, ...] = (),
        k_star: int = 0,
        start: int | None = None,
        latent_seed: int | None = None,
    ) -> None:
        """The request's level is chosen (and its neighbour's latents fetched): send its images on. `start`: the step
        its runs resume at, when its steps are not the default ones (None: `level`); `latent_seed`: `latent`'s run's.

        The choice is one image's (request.resumer): a latent starts one image. Its others run in full from their own
        seeds, as misses (ControlLoop.choose counts them so): resumed from the same latent, or moved up to the same
        fallback, `n` images were one image `n` times over (the scheduler steps from a latent without noise of
        the seed's), each costing a run."""
        self._choosing.pop(request, None)
        if request.done:
            return
        for job in request.jobs:
            job.similarity = similarity  # of its nearest cached prompt, reported whether its latent was used or not
            if job.index == request.resumer:
                job.level, job.latent, job.latent_seed, job.k_star = level, latent, latent_seed, k_star
                job.start = level if start is None else start
                job.fallbacks = fallbacks if self._escalate else ()
        self._route(request.jobs)

    def cancel(self, *requests: AdmittedRequest) -> None:
        """Answers the requests Cancelled, their queued jobs leaving the queues together: searched for there one by
        one as each request retired, in no order of the queue's, a stop's 20,000 held the loop 3.6-4 s."""
        with self._answered_together():
            for request in requests:
                request.finish(Cancelled(request.spec.request_id))

    def cancel_all(self) -> int:
        """Answers every request in flight Cancelled; how many there were."""
        requests = {job.request for job in self._live.values()}
        self.cancel(*requests)
        return len(requests)

    @contextmanager
    def _answered_together(self) -> Iterator[None]:
        """The jobs queued of the requests answered within leave their queues at its end, each queue read once."""
        self._leaving = []
        try:
            yield
        finally:
            leaving, self._leaving = self._leaving, None
            self._unqueue(leaving)

    def _retire(self, request: AdmittedRequest) -> None:
        """The request has its reply: drop what is left of it, abort what runs."""
        self._choosing.pop(request, None)
        self._unanswered_images -= len(request.jobs)
        aborts: dict[WorkerHandle, list[str]] = {}
        for job in request.jobs:
            if self._live.pop(job.job_id, None) is None:
                continue
            if job.worker is None:
                discard(self._pending, job)
            elif job.batch_id is None:
                if self._leaving is not None:
                    self._leaving.append(job)  # taken out with the others answered together, not searched for
                elif self._timing.remove_queued(job):  # not searched for once taken out (_unqueue)
                    discard(job.worker.queue, job)
                self._picks.file(job.worker)
            else:
                # stays in its batch until the worker answers; the answer is then ignored
                aborts.setdefault(job.worker, []).append(job.job_id)
        for worker, job_ids in aborts.items():
            if worker.registered:
                self._send(worker, Abort(job_ids))
        request.release_jobs()

    # -- routing and batching ------------------------------------------------
    def _route(self, jobs: list[Job]) -> None:
        """Queues the jobs on workers, then sends. All queued before any is sent: those that share a worker leave
        as one batch (sent one by one, the second would be judged as waiting behind the first, and its request could
        fail for it: so did a request's images routed again, after a worker loss or a wait for the first worker).
        Each worker first sends one batch, so jobs given to different idle workers run side by side rather than the
        first worker taking them all as the most urgent jobs queued anywhere. That batch too is led by the most
        urgent job: led by a laxer one queued before it, a tight job could only join it, and end late."""
        touched: dict[WorkerHandle, None] = {}
        spread = SpreadOver()
        for job in jobs:
            if job.job_id not in self._live:
                continue  # its request was answered as the jobs before it were queued (refused, or past its deadline)
            worker = self._enqueue(job, spread)
            if worker is not None:
                touched[worker] = None
                spread.add(worker)
        for worker in touched:
            if worker.ready and self._has_room(worker, self._clock()):
                self._send_most_urgent(worker)
        for worker in touched:
            self._pump(worker)

    def _enqueue(self, job: Job, siblings_on: SpreadOver | None = None) -> WorkerHandle | None:
        """Queues the job on a worker (None: it waits for one, or it was answered) without sending anything.
        `siblings_on`: the workers the images of its request before it were just queued on."""
        worker = self._picks.pick(job, siblings_on)
        if worker is not None and (refused := refusal(job.request, worker)):
            # admitted before any worker said which sizes it takes and which step counts its scheduler cannot run,
            # when admission could not check them: refused as admission refuses them (engine/dispatch/admission.py).
            # Sent, the worker refused the batch, and the client got a 500 worker_error for its own bad input
            job.request.fail(*refused)
            self._picks.file(worker)  # an idle one was taken off the idle list for the job
            return None
        job.worker = job.batch_id = None
        if worker is None:
            job.waiting_since = self._clock()
            self._pending.append(job)
            return None
        now = self._clock()
        if self._timing.ranks_anew(job, now):
            # a second client shares the fleet, the last but one left, or the fair clock ran ahead (fair_share.py). Not
            # on its worker yet: a job routed again has an entry left from its lost worker's queue, and named on a
            # worker it read as queued, and uncounted, among those ranked again (a KeyError that ended the engine)
            self._urgency.rebuild(list(self._timing.rerank(self._urgency.in_order(self._is_queued), now)))
        job.worker = worker
        if not self._has_room(worker, now) and not self._timing.may_queue(job, now):
            return None
        worker.queue.append(job)
        self._picks.file(worker)
        self._urgency.push(job, self._timing.add_queued(job, now), len(self._live), self._is_queued)
        return worker

    def _is_queued(self, job: Job) -> bool:
        """Waiting in a worker's queue: not sent, not answered, not waiting for a worker."""
        return job.worker is not None and job.batch_id is None and job.job_id in self._live

    def _pump(self, worker: WorkerHandle) -> None:
        while worker.ready and self._has_room(worker, self._clock()) and self._send_most_urgent(worker):
            pass
        self._picks.file(worker)

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
        """Puts the most urgent job queued anywhere at the head of the worker's queue, with the jobs queued beside it
        that share its batch key, then those near the heads of busy workers' queues (one with room sends its own: the
        images of a request spread over idle workers run apart), up to a batch. False: no job is queued."""
        job = self._urgency.first(self._is_queued)
        if job is None:
            return False
        owner = job.worker
        if owner is not worker:
            taken = take_with_mates(owner.queue, job, worker.hello.max_batch)
            self._picks.file(owner)
            for other in taken:
                other.worker = worker
            put_back(worker.queue, taken)
        elif worker.queue[0] is not job:
            worker.queue.remove(job)
            worker.queue.appendleft(job)
        now = self._clock()  # the mates of busy workers' queues: one with room sends its own
        busy = (other for other in self._registry.registered() if other.queue and not self._has_room(other, now))
        for other in gather_mates(worker, busy, worker.hello.max_batch):
            self._picks.file(other)
        return True

    def _take_batch(self, worker: WorkerHandle) -> list[Job]:
        now = self._clock()
        # the batch starts once what the worker holds is done
        wait = max(0.0, worker.busy_until - now)
        head = worker.queue.popleft()
        if not self._timing.still_wanted(head, now, wait):
            return []
        batch = [head]
        if self._on_last_try(head):
            return batch
        key = head.key
        limit = self._timing.batch_limit(head, worker.hello.max_batch, now, wait)
        kept: list[Job] = []
        while worker.queue and len(batch) < limit:
            job = worker.queue.popleft()
            # of this batch's key before still_wanted, which may answer a job or move it up (one of another key is
            # judged when it heads the queue), and after it: a job it moves up a level waits for a batch of that level
            joins = job.key == key and not self._on_last_try(job)
            if joins and self._timing.still_wanted(job, now, wait) and job.key == key:
                # a job joins only a batch its own deadline allows, and keeps it that small: the head's deadline
                # is not always the tightest (a job without one, or one moved up a level, keeps its place)
                fits = self._timing.batch_limit(job, limit, now, wait)
                if fits > len(batch):
                    batch.append(job)
                    limit = fits
                    continue
            kept.append(job)
        # still_wanted answering a job answers its request: its other jobs, in the batch or put aside, are gone too
        put_back(worker.queue, [job for job in kept if job.job_id in self._live])
        return [job for job in batch if job.job_id in self._live]

    def _on_last_try(self, job: Job) -> bool:
        """Whether the job's next send is its last try, after sends that did not answer it: it then runs in a batch of
        its own. Sent again with its batch-mates, an image that kills every worker it runs on (an input that crashes
        the model, a batch too large for the host's memory, a step past the stall timeout) had them lose each try
        with it, and fail worker_lost beside it though each alone would have been made."""
        return job.tries > 0 and job.tries >= self._config.max_attempts - 1

    def _send_batch(self, worker: WorkerHandle, jobs: list[Job]) -> None:
        batch_id = next(self._batch_ids)
        message = self._messages.of(batch_id, jobs)
        now = self._clock()
        self._timing.batch_sent(worker, jobs, now)
        worker.inflight[batch_id] = jobs
        for job in jobs:
            self._timing.remove_queued(job)
            job.batch_id = batch_id
            job.sent_at = now
        if not self._config.serve_late:
            self._sent_deadlines.watch(jobs, self._live)
        if not self._send(worker, message):
            # the batch never left (its worker gone, its connection closed): no worker tried its images, and they
            # count no try. Counted, a fleet stopped at once failed images worker_lost within milliseconds, each sent
            # to three gone workers in a row, while other workers were there to make them
            self.worker_lost(worker, "unreachable")
            return
        # counted as sent, not as routed again: an image lost with its worker, then met by a gone one, was counted twice
        self._metrics.redispatched.inc(sum(1 for job in jobs if job.attempts))
        for job in jobs:
            job.attempts += 1

    # -- worker events -------------------------------------------------------
    def worker_ready(self, worker: WorkerHandle) -> None:
        self._restarting.discard(worker.hello.worker_id)
        self._picks.file(worker)  # before the jobs waiting for a worker are routed: they go to it
        waiting, self._pending = self._pending, deque()
        self._route([job for job in waiting if job.job_id in self._live])
        self._pump(worker)

    def slot_given_up(self, worker_id: str) -> None:
        """The launcher starts the slot no more: a worker restarted as failing there is no longer out but gone. Counted
        as restarting for ever, it took a place among those out and kept other failing workers in rotation."""
        self._restarting.discard(worker_id)

    def worker_level_set(self, worker: WorkerHandle, level: int) -> None:
        worker.level = level
        self._picks.file(worker)

    def withhold(self, workers: list[WorkerHandle]) -> None:
        """Routes nothing more to `workers`, about to be lost together (WorkerLink says why)."""
        for worker in workers:
            self._picks.withhold(worker)

    def worker_lost(self, worker: WorkerHandle, cause: str) -> None:
        if not worker.registered:
            return
        self._registry.remove(worker)
        self._picks.drop(worker)
        self._metrics.worker_losses.labels(cause).inc()
        held = worker.held_jobs()
        if cause in ("left", "rejoined"):
            # a worker stopped as asked (SIGTERM, a scale-down) gives back its images unstarted or cut short by the
            # stop, not failed: they count no try. Counted, a fleet or Deployment scaled down at once failed images
            # worker_lost, each routed from one leaving worker to the next before that one's Leaving came in, while
            # the workers that stayed could make them. So does one that rejoined: it dropped them because it heard
            # nothing from this engine for its timeout (a worker that hangs drains what came meanwhile first), which
            # no image causes. An engine paused past that timeout (SIGSTOP, a paused VM) found every worker's new
            # hello waiting, routed each one's images to the worker whose hello came next, and failed them
            for job in held:
                job.given_back += job.batch_id is not None  # a queued one was never sent: no try to give back
        worker.queue.clear()
        worker.inflight.clear()
        with self.loss_lines.together():  # with the gone workers its images meet as they are routed again
            self.loss_lines.lost(worker, cause, held)
            self._route_again(held)

    def _route_again(self, jobs: list[Job]) -> None:
        # all of them wait for a worker before any is routed: routing one can give another worker room, and
        # it takes the most urgent job queued anywhere, which must not be one still counted on the worker they left
        for job in jobs:
            self._timing.remove_queued(job)
            job.worker = job.batch_id = None
        if self._rerouting is not None:
            # a worker lost as a job was routed again (a send its connection refused): its jobs are routed by the
            # loop below, not from within. Routed from within, each gone worker a job met took a level of the stack:
            # a fleet of 300 SIGKILLed, its idle workers picked one after another, raised RecursionError and left a
            # request answered internal_error, or never answered
            self._rerouting.extend(jobs)
            return
        self._rerouting = deque(jobs)
        try:
            while self._rerouting:
                jobs, self._rerouting = list(self._rerouting), deque()
                self._route([job for job in jobs if self._still_owed(job)])
        finally:
            self._rerouting = None

    def _take_out(self, worker: WorkerHandle) -> None:
        """The worker keeps failing its batches: restarted if the engine started it, else out of rotation for a
        while; or neither, when half the fleet is out already (failing_workers.may_take_out)."""
        if not failing_workers.may_take_out(self._registry, len(self._restarting)):
            return
        failed = worker.failed_batches
        if self.restart(worker):
            log.warning("worker %s failed %d batches in a row: restarting it", worker.name, failed)
            self._restarting.add(worker.hello.worker_id)
            self.worker_lost(worker, "failing")  # what it held is routed again, as for one that died
            return
        failing_workers.take_out(worker, self._clock())
        self._registry.take_out(worker)
        self._picks.drop(worker)
        queued, worker.queue = list(worker.queue), deque()
        log.warning(
            "worker %s failed %d batches in a row: out of rotation for %g s (it answers the %d batches it holds)",
            worker.name,
            failed,
            worker.out_for_s,
            len(worker.inflight),
        )
        self._route_again(queued)

    def _put_back(self, worker: WorkerHandle, now: float) -> None:
        self._registry.put_back(worker)
        log.warning(
            "worker %s back in rotation after %.0f s out%s: one more failed batch takes it out again",
            worker.name,
            now - (worker.back_at - worker.out_for_s),
            "" if worker.back_at <= now else ", no other worker being in rotation",
        )
        self.worker_ready(worker)

    def _still_owed(self, job: Job) -> bool:
        """Whether a job given back is to be routed again: False once answered, or (its request failed) tried
        max_attempts times."""
        if job.job_id not in self._live:
            return False
        if job.tries >= self._config.max_attempts:
            job.request.fail("worker_lost", f"the workers running this image failed {job.tries} times")
            return False
        return True

    def batch_done(self, worker: WorkerHandle, done: BatchDone) -> None:
        jobs = worker.inflight.pop(done.batch_id, None)
        if jobs is None:
            return  # a late answer for a batch already given up on
        if not worker.inflight:
            worker.busy_until = self._clock()  # idle now, whatever the estimate said
        self._picks.file(worker)  # the images it settles may be routed again, and find it free
        by_id = {job.job_id: job for job in jobs}
        failures: list[tuple[str, ItemFailed]] = []  # each failed image's request id, and why
        failed: list[failing_workers.Asked] = []  # what was asked of each but those refused (the batch's fault)
        made = unasked = False  # whether the batch made an image, and one not as asked
        # the images the worker stopped without the client asking, or left out: still owed, routed again together
        owed: list[Job] = []
        for outcome in done.outcomes:
            job = by_id.pop(outcome.request_id, None)
            if job is None:
                continue
            if isinstance(outcome, ItemDone):
                outcome = as_asked(worker, job, outcome)
                unasked |= isinstance(outcome, ItemFailed)
            made |= isinstance(outcome, ItemDone)
            if isinstance(outcome, ItemFailed):
                outcome = clipped(outcome)
                failures.append((job.request.spec.request_id, outcome))
                if outcome.code != REFUSED:
                    failed.append(failing_workers.asked(job))
            if isinstance(outcome, ItemCancelled):
                owed.append(job)
            elif job.job_id in self._live:
                self._settle(worker, job, outcome)
        if unasked:
            self._metrics.bad_messages.labels("worker").inc()
        if failures:  # one line a batch, not one an image
            self._failed_batch_lines.say(worker.name, done.batch_id, len(jobs), failures)
        self._route_again([*owed, *by_id.values()])  # a worker that answers a batch but leaves items out owes them
        self._timing.batch_ran(jobs, done.outcomes)
        if failing_workers.judge(worker, made, failed) and worker.ready:
            self._take_out(worker)
        self._pump(worker)

    def _settle(self, worker: WorkerHandle, job: Job, message: ItemDone | ItemFailed) -> None:
        self._live.pop(job.job_id)
        if isinstance(message, ItemDone):
            # the level it was sent at, not the one the worker names: a label takes only the engine's values
            self._metrics.images_at(job.level).inc()
            self._metrics.queue_seconds.observe(job.queued_s)
            # at the level it was judged at (of the default steps, the quality model's), not the step it resumed at
            estimated = self._quality(job.level, job.similarity)
            if estimated is not None:
                self._metrics.estimated_quality.observe(estimated)
            if self._on_image is not None:
                try:
                    self._on_image(worker, job, message)
                except Exception:  # caching what it passed through is a bonus: the image is the client's anyway
                    log.exception("handling image %s beyond its reply failed", job.job_id)
            job.request.image_done(job, job.result(message, worker, estimated))
        elif isinstance(message, ItemFailed):
            # worker_error whatever code the worker names: a worker's code would become a metric label (one series
            # per value made up) and the client's HTTP status (a 429 or 504 for a failure of its own)
            job.request.fail("worker_error", message.message)

    # -- time ----------------------------------------------------------------
    def sweep(self) -> None:
        """Answers requests whose deadline passed while queued or running, and jobs no worker could take; puts back
        in rotation the workers taken out whose time is up, and one at once when no worker is left in rotation."""
        now = self._clock()
        for worker in self._registry.taken_out():
            if worker.back_at <= now or not self._registry.in_rotation:
                self._put_back(worker, now)
        if not self._config.serve_late:
            for request in list(self._choosing):
                left = request.seconds_left(now)
                if left is not None and left <= 0:
                    self._timing.deadline_exceeded(
                        request, "queued", "the request's deadline passed while its level was chosen"
                    )
        for job_id in self._sent_deadlines.passed(now):
            job = self._live.get(job_id)
            # one given back since (its worker lost) is answered below, where it waits; one still sent: its answer,
            # should it come, is ignored, and what still runs is aborted (_retire)
            if job is not None and job.batch_id is not None:
                self._timing.deadline_exceeded(
                    job.request, "running", "the request's deadline passed while its images were made"
                )
        wait_s, told = self.worker_wait(now) if self._pending else (0.0, "")
        for job in list(self._pending):
            left = job.request.seconds_left(now)
            if left is not None and left <= 0 and not self._config.serve_late:
                self._timing.deadline_exceeded(
                    job.request, "no_worker", "the request's deadline passed while it waited for a worker"
                )
            elif now - job.waiting_since > wait_s:
                job.request.fail("no_worker", told)
        # every queued job, judged in the order the workers will take them, each behind the ones before it
        with self._answered_together():
            self._timing.answer_late(self._urgency.in_order(self._is_queued), now)

    def _unqueue(self, jobs: list[Job]) -> None:
        """Takes the queued jobs out of their queues, each queue read once."""
        for job in jobs:
            self._timing.remove_queued(job)
        for worker in take_out(jobs):
            self._picks.file(worker)
