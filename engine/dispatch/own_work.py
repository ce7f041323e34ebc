"""The least time a request's own images not yet sent still need, by the latency profile: what the dispatcher answers a
request `deadline_exceeded` (cause `predicted`) by when even that exceeds the time it has left.

A lower bound, never an estimate: a batch of b images that runs T seconds spends T/b on each, so an image costs a worker
at least the least T/b of any batch it could be in (any size up to the largest batch a registered worker runs, at any
level it may still move up to: a batch holds one level), whichever requests share its batch; no worker runs two batches
at once, so the fleet makes those images no sooner than their summed least costs shared evenly over every registered
worker (one taken out as failing too: it may come back). The wait for a busy worker, the work queued before the images,
the images already sent and the batch margin are left out: each only adds time. So, on the profile at the workers' pace
(what every prediction of the dispatcher's stands on), no request the registered fleet could serve in time is refused.
Judged by the image it waits on alone, a request of 10 due in 2 s on one worker of batch 1 (2.55 s of images) was sent
image by image until that image was late alone, at 1.5 s: six images made to be thrown away.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from controller.profiles import ProfileLatency
from engine.dispatch.jobs import AdmittedRequest, Job
from engine.fleet.registry import WorkerRegistry


class OwnWork:
    def __init__(self, latency: ProfileLatency, levels: Iterable[int], registry: WorkerRegistry):
        """`levels`: the profile's, the only ones a job is judged from (a level it lacks counts as taking no time)."""
        self._latency = latency
        self._levels = tuple(levels)
        self._registry = registry
        self._fleet_version = -1
        self._fleet = (0, 1)  # the workers registered, and the largest batch any of them runs
        # the least seconds an image takes in a batch, by (start, steps, the largest batch); the dearest of them over
        # the levels, by (steps, the largest batch): the profile does not change
        self._per_image: dict[tuple[int, int, int], float] = {}
        self._dearest: dict[tuple[int, int], float] = {}

    def exceeds(self, request: AdmittedRequest, starts: Callable[[Job], Iterable[int]], budget_s: float) -> bool:
        """Whether the least time the fleet needs for the request's images not yet sent nor made, in the profile's
        seconds, exceeds `budget_s`; `starts`: the profiled steps a job may still run from (none: it takes no time)."""
        workers, largest = self._fleet_now()
        if not workers:
            return False
        budget = budget_s * workers  # what the whole fleet can do in the time
        # no image needs more than the dearest level's least: a request with time to spare (most, each judged at every
        # sweep) is not read image by image
        if (len(request.jobs) - len(request.results)) * self._dearest_per_image(request.steps, largest) <= budget:
            return False
        unsent = (job for job in request.jobs if job.batch_id is None and job.index not in request.results)
        return sum(self._least(starts(job), request.steps, largest) for job in unsent) > budget

    def _fleet_now(self) -> tuple[int, int]:
        if self._fleet_version != self._registry.version:
            registered = self._registry.registered()
            self._fleet = (len(registered), max((worker.hello.max_batch for worker in registered), default=1))
            self._fleet_version = self._registry.version
        return self._fleet

    def _least(self, starts: Iterable[int], steps: int, largest: int) -> float:
        """The least seconds one image takes from any of `starts` (0 for none)."""
        return min((self._least_per_image(start, steps, largest) for start in starts), default=0.0)

    def _dearest_per_image(self, steps: int, largest: int) -> float:
        dearest = self._dearest.get((steps, largest))
        if dearest is None:
            dearest = self._dearest[steps, largest] = max(
                (self._least_per_image(level, steps, largest) for level in self._levels), default=0.0
            )
        return dearest

    def _least_per_image(self, start: int, steps: int, largest: int) -> float:
        key = (start, steps, largest)
        least = self._per_image.get(key)
        if least is None:
            least = min(self._latency.seconds(start, steps, b) / b for b in range(1, largest + 1))
            self._per_image[key] = least
        return least
