"""The dispatcher's timing judgement, by the latency profile: how long a job or a batch takes, when a job must
start, what is queued before it, whether it can still meet its deadline, and how large its batch may be.

Moving up a level (argus only; a job's fallbacks are the latents its neighbour has above its level): a job the
plan gave a level below its K* goes back to K* when it must queue, since that upgrade is only worth spare
capacity. A job that would miss its deadline behind the jobs queued before it moves up to the lowest fallback
that makes it. A job that cannot make it any more, or whose request's own images not yet sent cannot all be made in
time however they batch (own_work.py), is answered `deadline_exceeded` at once (unless the engine is told to serve
late). A job late behind costlier ones sheds them (answer_late). A batch is the largest that still meets
the deadline of every job in it, with a margin (BATCH_MARGIN).

A level the profile lacks (or no profile at all) counts as taking no time: its jobs are answered
`deadline_exceeded` once their deadline has passed, never on a prediction.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.profiles import LatencyProfile
from engine.dispatch.fair_share import FairClock, KeptJobs, SharingClients, fair_point, fair_rank
from engine.dispatch.index import FreeAt, QueuedWork
from engine.dispatch.jobs import AdmittedRequest, Fallback, Job
from engine.dispatch.own_work import OwnWork
from engine.fleet.profile_drift import ProfileDrift
from engine.fleet.registry import WorkerHandle, WorkerRegistry
from engine.metrics import EngineMetrics
from protocols.worker_messages import ItemDone, ItemOutcome

# a batch of several is sent only if it would end this share of its run time before the tightest deadline in it: the
# engine's own time past the run (the reply, the client's read) made batches that fitted to the millisecond end late,
# every image at once (SIMULATED, conv trace: batches of four exact images ending up to 0.65 s past the SLO)
BATCH_MARGIN = 0.05


class DispatchTiming:
    """Reads the fleet (the ready workers, when each should be free) and counts the work queued on it. Of what the
    dispatcher owns it writes only what timing decides: a worker's expected end, a job's level when it moves up,
    and the answer of a request that cannot make its deadline."""

    def __init__(
        self,
        profile: LatencyProfile | None,
        registry: WorkerRegistry,
        free_at: FreeAt,
        metrics: EngineMetrics,
        *,
        serve_late: bool,
        slo_s: float,
    ):
        self._profile = profile
        # a request's steps need not be the profile's N: its time is read off the profile's fit in steps run
        self._latency = profile.at_any_steps if profile is not None else None
        # the least time a request's own images still need, however they batch (own_work.py)
        self._own_work = OwnWork(self._latency, profile.latency_s, registry) if profile is not None else None
        self._drift = ProfileDrift(profile.name, metrics.batch_time_vs_profile.set) if profile is not None else None
        self._registry = registry
        self._free_at = free_at
        self._metrics = metrics
        self._serve_late = serve_late
        # a request sent without a deadline is served as if due this long after it was admitted
        self._slo_s = slo_s
        # the seconds of the jobs queued on the workers, by the time each must start by: what a job that must
        # queue is judged by, looked up without a pass over the queue
        self._queued_work = QueuedWork(self._image_seconds)
        # the clients sharing the fleet, among whom a queued job's fair point is reckoned (fair_share.py)
        self._sharing = SharingClients(least_s=slo_s, queues=self._queued_work.holds)
        self._fair = FairClock()
        self._ranked_shared = False  # whether the queued jobs were ranked with clients sharing the fleet
        # seconds the next rerank moves the fair clock back by (ranks_anew); None: it ranks the queue anew from now
        self._moving_back: float | None = None

    # -- how long ------------------------------------------------------------
    @property
    def pace(self) -> float:
        """What the profile's times are multiplied by: 1, or the workers' own pace once it strays far from the
        profile's (engine/fleet/profile_drift.py)."""
        return self._drift.pace if self._drift is not None else 1.0

    def _image_seconds(self, start: int, steps: int) -> float:
        """How long one image of `steps` steps takes from step `start` (0 for a level without a profile)."""
        return self._latency.seconds(start, steps, 1) * self.pace if self._profiled(start) else 0.0

    def queued_job_seconds(self, level: int) -> float:
        """What each job queued on a worker at `level` adds before it is free, to pick the worker free first:
        one image at the profile's steps (0 for a level without a profile)."""
        return self._profile.latency(level, 1) * self.pace if self._profiled(level) else 0.0

    def _seconds(self, job: Job, start: int, batch: int = 1) -> float:
        """How long a batch of `batch` jobs like `job` takes from step `start`, at the workers' pace."""
        return self._profiled_seconds(job, start, batch) * self.pace

    def _profiled_seconds(self, job: Job, start: int, batch: int) -> float:
        return self._latency.seconds(start, job.request.steps, batch)

    def _profiled(self, start: int) -> bool:
        """Whether the profile times a run from step `start` (a job's start is one of the cache levels, which a
        profile the engine takes has every one of)."""
        return self._profile is not None and start in self._profile.latency_s

    def batch_sent(self, worker: WorkerHandle, jobs: list[Job], now: float) -> None:
        """The batch `jobs` was just sent to the worker: it should be busy that much longer, and the fair clock
        moves on to the fair point of the job that led it, the most urgent queued. Not to its batch-mates': taken
        from the worker's queue in the order queued there, they can lie far beyond it in the order of fair points,
        and the clock run that far ahead was moved back past the flood's queued jobs, before a light request."""
        if jobs[0].fair_point is not None:
            self._fair.sent(jobs[0].fair_point)
        start = jobs[0].start
        if self._profiled(start):
            worker.busy_until = max(now, worker.busy_until) + self._seconds(jobs[0], start, len(jobs))

    def batch_ran(self, jobs: list[Job], outcomes: list[ItemOutcome]) -> None:
        """The worker answered the batch `jobs` with `outcomes`: the time it ran, held against what the profile says
        (engine/fleet/profile_drift.py), if it made every image. A worker runs only the images not aborted before its
        run, and answers those aborted during it cancelled too: a run of fewer images, or of a number unknown, held
        against the whole batch's time said the workers ran faster than they do (half as long, for a batch of two one of
        whose images was aborted as it queued there), and the engine planned for capacity it lacked."""
        start = jobs[0].start
        if self._drift is None or not self._profiled(start):
            return
        run_ms = {outcome.request_id: outcome.run_ms for outcome in outcomes if isinstance(outcome, ItemDone)}
        if run_ms.keys() == {job.job_id for job in jobs}:
            # against the profile itself, not the pace: that is what is measured
            self._drift.batch_ran(self._profiled_seconds(jobs[0], start, len(jobs)), max(run_ms.values()) / 1000.0)

    # -- when ----------------------------------------------------------------
    def _start_by(self, job: Job) -> float:
        """The latest time the job can start at its level and still meet its deadline. Jobs are served in this
        order (or later, by their client's fair point: _rank): a miss, which runs all steps and cannot move up a
        level, goes before a hit that came a little earlier but can wait longer. A request sent without a deadline
        is ranked as due one SLO (the one the controller plans for) after it was admitted: it is never answered
        late, and it no longer waits for as long as requests with a deadline keep coming."""
        deadline = job.request.deadline
        if deadline is None:
            deadline = job.request.admitted_at + self._slo_s
        return deadline - (self._seconds(job, job.start) if self._profiled(job.start) else 0.0)

    def ranks_anew(self, job: Job, now: float) -> bool:
        """Counts the job's client among those sharing the fleet (fair_share.py): called for each job routed to a
        worker, before it is judged, so that even a client whose jobs are answered deadline_exceeded at once counts.
        True when the queued jobs are to be ranked again (rerank): anew from now as a second client comes (the
        first's were ranked by their deadlines alone) or the last but one leaves (the lone client's next jobs,
        ranked by their deadlines, would go before its backlog at its fair points); or moved back, when the fair
        clock ran ahead of now, its clients served beyond their shares, by more than twice the bound (an SLO, or the
        time the fleet takes to clear the queue if longer), to the bound. Moved back to now, a flood's next jobs
        went before a light client's request that came then, due within the SLO; moved back at most once in the
        time the queue could clear, the pass costs O(log n) a job served."""
        clears_in = self._queued_work.seconds() / max(1, self._registry.in_rotation)
        self._sharing.note(job.request.client, now, clears_in)
        shared = self._sharing.count(now) > 1
        self._moving_back = None
        if shared != self._ranked_shared:
            self._ranked_shared = shared
            return True
        bound, ahead = max(self._slo_s, clears_in), self._fair.ahead(now)
        if shared and ahead > 2 * bound:
            self._moving_back = ahead - bound
            return True
        return False

    def _rank(self, job: Job, now: float) -> tuple[float, float | None]:
        """The job's place in the order the workers take jobs: the time it must start by, or later, with other
        clients sharing the fleet, its client's fair point behind its last job queued (fair_share.py FairClock);
        and that fair point (None while one client alone shares the fleet)."""
        start_by = self._start_by(job)
        sharing = self._sharing.count(now)
        if sharing < 2:
            return start_by, None
        workers = max(1, self._registry.in_rotation)
        since, queued_s = self._fair.behind(job.request.client, now)
        return fair_rank(start_by, since, queued_s, sharing, workers), fair_point(since, queued_s, sharing, workers)

    def _ranked(self, job: Job, now: float) -> float:
        """Ranks the job as it is queued: its place, and its fair point, which its client's next job goes behind."""
        job.rank, job.fair_point = self._rank(job, now)
        if job.fair_point is not None:
            self._fair.queued(job.request.client, job.fair_point, self._image_seconds(job.start, job.request.steps))
        return job.rank

    def _place(self, job: Job, now: float) -> float:
        """The job's rank: the one it had when queued before, for a job routed again. Ranked anew, an image whose worker
        was lost as it ran ranked at its client's fair point behind all the client's backlog, images it came before."""
        return job.rank if job.rank is not None else self._rank(job, now)[0]

    def sharing_clients(self, now: float) -> int:
        return self._sharing.count(now)

    def add_queued(self, job: Job, now: float) -> float:
        """Counts a job just queued on a worker among the work queued; returns its place in the order the workers
        take jobs."""
        rank = job.rank if job.rank is not None else self._ranked(job, now)
        self._queued_work.add(job, rank)
        self._count_if_put_back(job, rank, now)
        return rank

    def rerank(self, queued: Iterable[Job], now: float) -> list[tuple[Job, float]]:
        """The jobs queued, in the order the workers take them, each with its place ranked again (ranks_anew says
        when and how): the fair clock moved back, or anew from now, with clients sharing the fleet each client's
        jobs behind those of its own before them, alone by the times they must start by. A client's jobs keep their
        order (the times they must start by and their fair points only grow along it, and ties keep the order
        given); ranked anew, a newcomer's job goes before the part of the backlog beyond its fair share. O(n log n).
        """
        if self._moving_back is not None:
            ranked = self._moved_back(queued, self._moving_back)
        else:
            self._fair.restart(now)
            ranked = []
            for job in queued:
                rank = self._ranked(job, now)
                self._count_if_put_back(job, rank, now)
                ranked.append((job, rank))
        self._queued_work.rekey(ranked)
        return ranked

    def _moved_back(self, queued: Iterable[Job], back: float) -> list[tuple[Job, float]]:
        """The jobs queued, their fair points `back` seconds earlier: a job its fair point put back ranks that much
        earlier, or by the time it must start by once that is later (none is put back that was not)."""
        self._fair.move_back(back)
        ranked = []
        for job in queued:
            if job.fair_point is not None:
                job.fair_point -= back
                start_by = self._start_by(job)
                if job.rank > start_by:  # ranked at its fair point: its client had jobs queued before it
                    job.rank = max(start_by, job.fair_point)
            ranked.append((job, job.rank))
        return ranked

    def _put_back(self, job: Job, rank: float) -> bool:
        """Whether its client's fair point, not the time it must start by, ranks the job (fair_share.py)."""
        return rank > self._start_by(job)

    def _count_if_put_back(self, job: Job, rank: float, now: float) -> None:
        # a lone client's rank is the time it must start by: nothing more to look up on the one-client path
        if self._sharing.count(now) > 1 and self._put_back(job, rank):
            self._metrics.fair_deferrals.inc()

    def remove_queued(self, job: Job) -> bool:
        """The job left the workers' queues (sent, answered, or its worker lost); nothing if it was in none. Whether it
        was counted among the work queued (every job in a worker's queue is)."""
        if not self._queued_work.remove(job):
            return False
        if not self._queued_work.holds(job.request.client):
            self._fair.forget(job.request.client)
        return True

    def _first_free_in(self, now: float) -> float:
        """Seconds until the first ready worker is free: a freed worker takes the most urgent job queued
        anywhere, whichever worker it was queued on."""
        return self._free_at.first_free_in(now)

    def _work_before(self, rank: float) -> float:
        """Seconds the workers in rotation need, shared among them, for the jobs queued anywhere that go before a job
        ranked at `rank` (the job, not queued yet, is not among them)."""
        return self._queued_work.seconds_up_to(rank) / max(1, self._registry.in_rotation)

    # -- whether it makes its deadline ---------------------------------------
    def may_queue(self, job: Job, now: float) -> bool:
        """A job that must wait for a worker: False (and the request answered) when that is too long. It moves
        up a level (back to K*, or to make its deadline) or is answered now, not when it reaches the head of the
        queue."""
        self._hold_at_best_level(job)
        if job.request.deadline is None:
            return True
        wait = self._first_free_in(now)
        rank = self._place(job, now)
        ahead = wait + self._work_before(rank)
        if not self._makes_it(job, now, ahead) and self._queued_work.costlier_up_to(rank, self._cheapest_seconds(job)):
            ahead = wait  # late only behind costlier jobs: the next sweep weighs it against them (answer_late)
        return self.still_wanted(job, now, wait, ahead)

    def answer_late(self, queued: Iterable[Job], now: float) -> None:
        """Answers, of the jobs queued, in the order the workers will take them, those that can no longer meet their
        deadline, or are shed so that more jobs meet theirs (each as it is met; one that makes it by moving up a
        level is moved). Each is judged behind the ones kept before it, shared among the workers.

        A job late behind them (even moved up as far as it may go) sheds the costliest job with a deadline kept
        before it while that one takes longer than it would: the rule that serves the most jobs in time on one machine
        (Moore-Hodgson). In a burst, misses that must run all their steps no longer crowd out hits that would
        take half the time, to end late themselves; a violation is a violation, whichever request it is.

        Only a job with a deadline is ever answered here, and only when not served late: with none such queued, the
        queue is not read at all. Read, a queue of 20,000 jobs without deadlines took a fifth of the engine's time."""
        if self._serve_late or not self._queued_work.any_deadline():
            return
        workers = max(1, self._registry.in_rotation)  # not one taken out as failing: it takes no job
        wait = None  # until the soonest worker frees: only looked for when a queued job has a deadline
        before = 0.0
        kept = KeptJobs(by_client=self._sharing.count(now) > 1)
        for place, job in enumerate(queued):
            if job.request.deadline is not None:
                wait = self._first_free_in(now) if wait is None else wait
                cheapest = self._cheapest_seconds(job)
                while not self._makes_it(job, now, wait + before / workers):
                    shed = kept.shed_costlier(cheapest, self._sheds_from(job))
                    if shed is None:
                        break
                    seconds, costlier = shed
                    before -= seconds  # its seconds leave the work before this job
                    self.deadline_exceeded(
                        costlier.request, "shed", "the request was shed so that more requests meet their deadline"
                    )
                    before -= kept.drop(costlier.request)  # its other images kept before this job go with it
                    if job.request.done:  # it shed an image of its own request: no other is shed for one answered
                        break
                if not self.still_wanted(job, now, wait, wait + before / workers):
                    before -= kept.drop(job.request)
                    continue
            seconds = self._image_seconds(job.start, job.request.steps)
            before += seconds
            if job.request.deadline is not None:
                # one sent without a deadline is never answered deadline_exceeded: its time goes before the jobs
                # behind it, and it is not shed. Shed, a pipeline's misses were answered 504 for the hits behind them
                kept.keep(job, seconds, place)

    def _sheds_from(self, job: Job) -> str | None:
        """Whose jobs a late job may shed: its own client's when its client's fair point put it back (fair_share.py,
        KeptJobs), else anyone's (None)."""
        return job.request.client if self._put_back(job, self._queued_work.key_of(job)) else None

    def still_wanted(self, job: Job, now: float, wait: float, ahead: float | None = None) -> bool:
        """False (and the request answered) for a job that is done for, or can no longer meet its deadline.

        `wait`: until its worker is free; `ahead`: until the jobs queued before it are done too, each
        counted as if it ran alone (batching only shortens it). Its request's own images not yet sent are counted
        at the least time any batch could make them in (own_work.py): a request that needs more than it has left
        for them alone is answered before an image is made for nothing. A job that would be late behind them
        moves up to its fallback now (argus), while that still makes its deadline: moved early, it
        leaves the time it saves to the jobs behind it, misses among them, which cannot move up.
        """
        if job.request.done:
            return False
        left = job.request.seconds_left(now)
        if left is None or self._serve_late:
            return True
        if left <= 0:
            self.deadline_exceeded(job.request, "queued", "the request's deadline passed before it could be served")
            return False
        if not self._profiled(job.start):
            return True
        if self._own_work.exceeds(job.request, self._starts, left / self.pace):
            return self._predicted(job.request)  # its own images alone, at the fleet's best, take longer than it has
        latency = self._seconds(job, job.start)
        if ahead is not None and ahead > wait and ahead + latency > left:
            self._escalated(job, left - ahead)
            latency = self._seconds(job, job.start)
        if wait + latency > left and not self._escalated(job, left - wait):
            return self._predicted(job.request)
        return True

    def _predicted(self, request: AdmittedRequest) -> bool:
        self.deadline_exceeded(request, "predicted", "the request can no longer be served within its deadline")
        return False

    def _starts(self, job: Job) -> list[int]:
        """The profiled steps the job may run from: its own and its fallbacks' (none when its own is not profiled)."""
        if not self._profiled(job.start):
            return []
        return [job.start, *(fallback.start for fallback in job.fallbacks if self._profiled(fallback.start))]

    def _cheapest_seconds(self, job: Job) -> float:
        """How long the job takes alone at the highest level it may move up to (its own if none)."""
        starts = self._starts(job)
        return self._seconds(job, max(starts)) if starts else 0.0

    def _makes_it(self, job: Job, now: float, ahead: float) -> bool:
        """Whether the job, started after `ahead` seconds, would meet its deadline at some level it may take."""
        left = job.request.seconds_left(now)
        return left is None or self._serve_late or ahead + self._cheapest_seconds(job) <= left

    def deadline_exceeded(self, request: AdmittedRequest, cause: str, message: str) -> None:
        if request.fail("deadline_exceeded", message):
            self._metrics.deadline_exceeded_by(cause).inc()

    def batch_limit(self, job: Job, max_batch: int, now: float, wait: float) -> int:
        """The largest batch that still meets the job's deadline, by the latency profile, with BATCH_MARGIN of its
        time to spare. One served late (--serve-late) that cannot meet it at all gains nothing from a small batch: it
        takes a whole one, and the jobs late behind it are served at the fleet's full rate."""
        left = job.request.seconds_left(now)
        if left is None or not self._profiled(job.start):
            return max_batch
        spare = 1.0 + BATCH_MARGIN
        fitting = (b for b in range(max_batch, 1, -1) if self._seconds(job, job.start, b) * spare <= left - wait)
        late = self._serve_late and self._seconds(job, job.start) > left - wait
        return next(fitting, max_batch if late else 1)

    # -- moving up a level ---------------------------------------------------
    def _hold_at_best_level(self, job: Job) -> None:
        """A job the plan gave a level below its K* (an upgrade, paid for by spare capacity) goes back up to
        K* when it must wait: capacity is not spare while jobs queue."""
        if job.level < job.k_star:
            best = [fallback for fallback in job.fallbacks if fallback.level <= job.k_star]
            if best:
                self._move_up(job, best[-1])

    def _escalated(self, job: Job, budget_s: float) -> bool:
        """Moves a job too slow at its level up to the lowest of its fallbacks that makes the deadline."""
        for fallback in job.fallbacks:
            if self._profiled(fallback.start) and self._seconds(job, fallback.start) <= budget_s:
                self._move_up(job, fallback)
                if not job.escalated:  # the metric counts images: one moved up twice is still one image
                    job.escalated = True
                    self._metrics.escalated.inc()
                return True
        return False

    def _move_up(self, job: Job, fallback: Fallback) -> None:
        job.level, job.start, job.latent, job.latent_seed = fallback
        job.fallbacks = tuple(higher for higher in job.fallbacks if higher.level > job.level)
        self._queued_work.moved_up(job)
