"""Which worker a job goes to: one idle (at its level first), else the one that could start it first, or, for a
request's further images, a worker that was idle until its first ones went there (SpreadOver). The dispatcher files
a worker here whenever its level, queue or batches change, and drops it when it leaves the rotation."""

from __future__ import annotations

from collections.abc import Callable

from engine.dispatch.index import FreeAt, IdleWorkers, SpreadOver
from engine.dispatch.jobs import Job
from engine.fleet.registry import WorkerHandle, WorkerRegistry


class WorkerPicks:
    def __init__(
        self,
        registry: WorkerRegistry,
        free_at: FreeAt,
        queued_job_seconds: Callable[[int], float],
        clock: Callable[[], float],
    ):
        """`free_at`: shared with the dispatcher's timing, which judges a job that must queue by the same workers;
        `queued_job_seconds`: what a job queued at a level adds before its worker is free."""
        self._registry = registry
        self._free_at = free_at
        self._idle = IdleWorkers()
        # workers about to be lost together (Dispatcher.withhold), until each one's loss drops it
        self._withheld: set[WorkerHandle] = set()
        self._queued_job_seconds = queued_job_seconds
        self._clock = clock

    def file(self, worker: WorkerHandle) -> None:
        """By when the worker should be free, and among the idle workers if it is one."""
        if not worker.ready or worker in self._withheld:
            return
        self._free_at.file(worker)
        if not worker.queue and not worker.inflight:
            self._idle.add(worker)

    def drop(self, worker: WorkerHandle) -> None:
        """The worker takes no job any more (gone, or out of rotation)."""
        self._free_at.drop(worker)
        self._idle.drop(worker)
        self._withheld.discard(worker)

    def withhold(self, worker: WorkerHandle) -> None:
        """The worker is about to be lost: it takes no job, though still ready until then. Filed again as the others
        lost with it were (a worker with room taking the job queued on it), it was routed their images, and its own
        loss counted a try of each."""
        self.drop(worker)
        self._withheld.add(worker)

    def pick(self, job: Job, siblings_on: SpreadOver | None = None) -> WorkerHandle | None:
        """The worker the job goes to; None with none in rotation. `siblings_on`: the workers the images of its
        request before it were just queued on."""
        if not self._registry.in_rotation:
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
        seconds = self._queued_job_seconds(job.level)
        picked = self._free_at.soonest(now, job.level, seconds)
        if picked is None:
            picked = self._free_at.soonest(now, None, 0.0)
        # a worker that was idle until the request's first images went to it, at whatever level, is as idle for the
        # rest: they spread over those. Queued on the one at their level, they left in one batch there while the
        # others ran one image each, and a request of 8 due in 3 s ended late on two workers that make it in 2.55 s
        spare = siblings_on.sooner_than(picked, now, seconds) if siblings_on is not None else None
        return picked if spare is None else spare
