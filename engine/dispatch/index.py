"""What the dispatcher looks up on every route (and every sweep), kept up to date so that a look-up scans neither
the fleet nor the queue: with a thousand workers and a burst of a thousand images, a scan per image blocked the
event loop for seconds."""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator

from engine.dispatch.jobs import Job
from engine.fleet.registry import WorkerHandle

# stale entries a heap may hold beyond twice its live ones (workers, jobs) before it is compacted
HEAP_SLACK = 64


class FreeAt:
    """The ready workers by level and queue length, for the one that could start a queued job first. A worker is
    filed again whenever its level, queue or batches change; its older entries are left behind and dropped when
    met. A look-up reads the first worker of each group: a handful (queue lengths differ little, since jobs
    queue on the worker free first), whatever the size of the fleet."""

    def __init__(self) -> None:
        self._by_level: dict[int, dict[int, _Group]] = {}
        self._latest: dict[WorkerHandle, int] = {}  # the filing order of each worker's one live entry
        # what each worker's live entry was filed with: (level, queue length, busy_until, load)
        self._filed: dict[WorkerHandle, tuple[int, int, float, int]] = {}
        self._joined: dict[WorkerHandle, int] = {}
        self._order = itertools.count()

    def file(self, worker: WorkerHandle) -> None:
        level, queued, ends, load = filed = (worker.level, len(worker.queue), worker.busy_until, worker.load)
        if self._filed.get(worker) == filed:
            # its live entry says the same (about 40% of filings at the engine bench's peak): filed again, it left one
            # more stale entry for the look-ups to pop
            return
        self._filed[worker] = filed
        order = next(self._order)
        self._latest[worker] = order
        joined = self._joined.setdefault(worker, order)
        group = self._by_level.setdefault(level, {}).setdefault(queued, _Group())
        group.add((ends, load, joined, order, worker), 2 * len(self._latest) + HEAP_SLACK, self._is_latest)

    def drop(self, worker: WorkerHandle) -> None:
        self._latest.pop(worker, None)
        self._filed.pop(worker, None)
        self._joined.pop(worker, None)

    def soonest(self, now: float, level: int | None, queued_job_s: float) -> WorkerHandle | None:
        """The worker at `level` (None: any) that could start a job queued on it now first: once its sent batches
        end (now, if they are overdue) and its queue has run, at `queued_job_s` seconds a job; of those equally
        soon, the one holding the fewest images, then the first to join."""
        best, best_at = None, None
        for at_level in list(self._by_level) if level is None else [level]:
            for queued, (ends, load, joined, worker) in self._firsts(at_level, now):
                at = (ends + queued * queued_job_s, load, joined)
                if best_at is None or at < best_at:
                    best, best_at = worker, at
        return best

    def first_free_in(self, now: float) -> float:
        """Seconds until the first worker's sent batches should end (0: one has none running, or no worker)."""
        ends = (first[0] for level in list(self._by_level) for _, first in self._firsts(level, now))
        return min(ends, default=now) - now

    def _firsts(self, level: int, now: float) -> Iterator[tuple[int, tuple[float, int, int, WorkerHandle]]]:
        """(queue length, (when its sent batches end, images held, joining order, worker)) of the first live
        worker of each group at `level`; a group left with none is dropped."""
        groups = self._by_level.get(level, {})
        for queued in list(groups):
            first = groups[queued].first(now, self._is_latest)
            if first is not None:
                yield queued, first
            else:
                del groups[queued]

    def _is_latest(self, entry: tuple) -> bool:
        return self._latest.get(entry[-1]) == entry[-2]


class _Group:
    """The workers at one level with one queue length: those whose sent batches should still run, by when they
    end, then images held; those past that estimate, whose end is any moment now, by images held alone."""

    def __init__(self) -> None:
        self._running: list[tuple[float, int, int, int, WorkerHandle]] = []  # (ends, load, joined, order, worker)
        self._overdue: list[tuple[int, int, int, WorkerHandle]] = []  # (load, joined, order, worker)

    def add(self, entry: tuple[float, int, int, int, WorkerHandle], most: int, is_latest: Callable[[tuple], bool]):
        heapq.heappush(self._running, entry)
        if len(self._running) + len(self._overdue) > most:  # compacted: stale entries deep in a heap stay there
            for heap in (self._running, self._overdue):
                heap[:] = filter(is_latest, heap)
                heapq.heapify(heap)

    def first(self, now: float, is_latest: Callable[[tuple], bool]) -> tuple[float, int, int, WorkerHandle] | None:
        running, overdue = self._running, self._overdue
        # as the clock passes a worker's estimated end it joins the overdue ones, for good: time only moves on
        while running and (not is_latest(running[0]) or running[0][0] <= now):
            entry = heapq.heappop(running)
            if is_latest(entry):
                heapq.heappush(overdue, entry[1:])
        while overdue and not is_latest(overdue[0]):
            heapq.heappop(overdue)
        if overdue:
            return (now, *overdue[0][:2], overdue[0][-1])
        if running:
            return (*running[0][:3], running[0][-1])
        return None


class QueuedWork:
    """The jobs queued on the workers by their key in the urgency order (the time each must start by, or later its
    client's fair point), for the seconds of work that go before a key: per kind of job (the step it starts from,
    steps), the count of keys up to it, found by bisection, times one image's seconds, instead of a pass over every
    queued job. And how many jobs each client has queued, for whether it has any."""

    def __init__(self, image_seconds: Callable[[int, int], float]):
        self._image_seconds = image_seconds  # (start, steps) -> seconds of one image
        self._keys: dict[tuple[int, int], list[float]] = {}  # by kind: the keys of the jobs queued, sorted
        self._counted: dict[str, tuple[tuple[int, int], float]] = {}  # job id -> the kind and key it is counted at
        self._by_client: Counter[str] = Counter()  # the jobs each client has queued
        self._with_deadline = 0  # of the jobs counted, those whose request has a deadline

    def add(self, job: Job, key: float) -> None:
        kind = (job.start, job.request.steps)
        self._counted[job.job_id] = kind, key
        bisect.insort(self._keys.setdefault(kind, []), key)
        self._by_client[job.request.client] += 1
        self._with_deadline += job.request.deadline is not None

    def remove(self, job: Job) -> bool:
        """The job left the queue (sent, answered, or its worker lost): whether it was counted (nothing if not)."""
        counted = self._counted.pop(job.job_id, None)
        if counted is None:
            return False
        kind, key = counted
        self._with_deadline -= job.request.deadline is not None
        keys = self._keys[kind]
        del keys[bisect.bisect_left(keys, key)]
        if not keys:
            del self._keys[kind]
        self._by_client[job.request.client] -= 1
        if not self._by_client[job.request.client]:
            del self._by_client[job.request.client]
        return True

    def rekey(self, ranked: list[tuple[Job, float]]) -> None:
        """The queued jobs ranked anew (fair_share.py): each counted at its new key, the keys sorted once rather than
        each taken out and put in again, a pass over the queue for each."""
        for job, key in ranked:
            kind, _ = self._counted[job.job_id]
            self._counted[job.job_id] = kind, key
        self._keys = {}
        for kind, key in self._counted.values():
            self._keys.setdefault(kind, []).append(key)
        for keys in self._keys.values():
            keys.sort()

    def key_of(self, job: Job) -> float:
        """The key a queued job is counted at."""
        return self._counted[job.job_id][1]

    def moved_up(self, job: Job) -> None:
        """A queued job runs at a faster level now: it is counted at that one, in the place it kept."""
        counted = self._counted.get(job.job_id)
        if counted is not None:
            self.remove(job)
            self.add(job, counted[1])

    def any_deadline(self) -> bool:
        """Whether a job queued has a deadline (one of a request answered and not yet retired may count)."""
        return self._with_deadline > 0

    def costlier_up_to(self, key: float, seconds: float) -> bool:
        """Whether a job keyed at or before `key` takes longer than `seconds` for its image."""
        return any(keys[0] <= key and self._image_seconds(*kind) > seconds for kind, keys in self._keys.items())

    def seconds_up_to(self, key: float) -> float:
        """Seconds the queued jobs keyed at or before `key` take one by one."""
        return sum(self._image_seconds(*kind) * bisect.bisect_right(keys, key) for kind, keys in self._keys.items())

    def seconds(self) -> float:
        """Seconds all the queued jobs take one by one."""
        return sum(self._image_seconds(*kind) * len(keys) for kind, keys in self._keys.items())

    def holds(self, client: str) -> bool:
        """Whether the client has a job queued."""
        return client in self._by_client


class IdleWorkers:
    """The workers with nothing queued or running, by level (insertion-ordered sets). Entries go stale when a
    worker gets work or changes level, and are dropped or moved when met: a pick is O(1), not a scan of a
    thousand workers."""

    def __init__(self) -> None:
        self._by_level: dict[int, dict[WorkerHandle, None]] = {}

    def __len__(self) -> int:
        """Entries held, stale ones too."""
        return sum(len(bucket) for bucket in self._by_level.values())

    def add(self, worker: WorkerHandle) -> None:
        self._by_level.setdefault(worker.level, {})[worker] = None

    def drop(self, worker: WorkerHandle) -> None:
        """A worker lost: a list is only weeded when searched, and one at a level no job asks for never is, so a
        fleet whose workers come and go would leave a handle there for each."""
        for bucket in self._by_level.values():
            bucket.pop(worker, None)

    def pick(self, level: int | None) -> WorkerHandle | None:
        """A worker with nothing queued or running, at `level` (None: any level), taken off the list; or None."""
        for bucket_level in [level] if level is not None else list(self._by_level):
            bucket = self._by_level.get(bucket_level, {})
            while bucket:
                worker = next(iter(bucket))
                del bucket[worker]
                if not (worker.ready and not worker.queue and not worker.inflight):
                    continue  # it got work since, or left: it is noted again once idle
                if worker.level != bucket_level:
                    self.add(worker)  # it changed level
                    continue
                return worker
        return None


class UrgencyOrder:
    """Every job queued on a worker, by the latest time it can start and still meet its deadline (or later, its
    client's fair point: fair_share.py), then in the order queued: a worker with room serves the most urgent,
    wherever it queued. Entries go stale when the job leaves the queue and are dropped when met; `is_queued`, the
    dispatcher's, says which are live."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Job]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        """Entries held, stale ones too."""
        return len(self._heap)

    def push(self, job: Job, start_by: float, live: int, is_queued: Callable[[Job], bool]) -> None:
        """Notes a job just queued; `live`: the jobs still unanswered, to compact by."""
        heapq.heappush(self._heap, (start_by, next(self._order), job))
        if len(self._heap) > 2 * live + HEAP_SLACK:
            self._compact(is_queued)

    def rebuild(self, ranked: Iterable[tuple[Job, float]]) -> None:
        """Holds these jobs alone, at these places (engine/dispatch/fair_share.py: the second client to share the
        fleet)."""
        self._heap = [(rank, next(self._order), job) for job, rank in ranked]
        heapq.heapify(self._heap)

    def first(self, is_queued: Callable[[Job], bool]) -> Job | None:
        """The most urgent job queued, left in place; None when none is."""
        while self._heap:
            job = self._heap[0][2]
            if is_queued(job):
                return job
            heapq.heappop(self._heap)
        return None

    def in_order(self, is_queued: Callable[[Job], bool]) -> Iterator[Job]:
        """The jobs queued, most urgent first, each once; each checked as it is reached, so one that leaves the
        queue while the ones before it are handled is passed over."""
        seen = set()
        for _, _, job in sorted(self._heap):
            if job.job_id in seen or not is_queued(job):
                continue
            seen.add(job.job_id)
            yield job

    def _compact(self, is_queued: Callable[[Job], bool]) -> None:
        """Drops the entries of jobs no longer queued. Entries leave the heap only from its top, so under a
        steady stream of urgent jobs, those of jobs that could wait long would pile up, each holding its
        finished request and images; a job routed again has its latest entry kept."""
        latest = {entry[2].job_id: entry for entry in sorted(self._heap, key=lambda entry: entry[1])}
        self._heap = [entry for entry in latest.values() if is_queued(entry[2])]
        heapq.heapify(self._heap)


class SentDeadlines:
    """The ids of the jobs sent to workers whose request has a deadline, by that deadline. Ids, not jobs: the
    entry of a job answered since holds none of its images until it is met, or the heap is compacted."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._order = itertools.count()

    def watch(self, jobs: list[Job], live: Collection[str]) -> None:
        """Notes the jobs of a batch just sent; `live`: the ids of the jobs still unanswered, to compact by."""
        for job in jobs:
            if job.request.deadline is not None:
                heapq.heappush(self._heap, (job.request.deadline, next(self._order), job.job_id))
        if len(self._heap) > 2 * len(live) + HEAP_SLACK:
            self._heap = [entry for entry in self._heap if entry[2] in live]
            heapq.heapify(self._heap)

    def passed(self, now: float) -> Iterator[str]:
        """The ids whose deadline is past, each once (some answered since)."""
        while self._heap and self._heap[0][0] <= now:
            yield heapq.heappop(self._heap)[2]


class SpreadOver:
    """The workers a request's images were just queued on that run nothing yet, by the jobs each has queued: the
    request's further images spread over them as over idle workers. An entry goes stale as its worker's queue grows
    (the worker is noted again) and is dropped when met: a request of 2,048 images on 1,024 idle workers, each image
    comparing every one of them, held the loop for 340 ms."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, WorkerHandle]] = []
        self._order = itertools.count()

    def add(self, worker: WorkerHandle) -> None:
        """Notes a worker one of the request's images was just queued on."""
        if not worker.inflight:
            heapq.heappush(self._heap, (len(worker.queue), next(self._order), worker))

    def sooner_than(self, picked: WorkerHandle | None, now: float, queued_job_s: float) -> WorkerHandle | None:
        """Of those noted that still run nothing, the one with the fewest jobs queued if it would start a job queued
        now sooner than `picked` would (each queued job taking `queued_job_s`); else None."""
        while self._heap:
            queued, _, worker = self._heap[0]
            if worker.ready and not worker.inflight and queued == len(worker.queue):
                starts_in = now + queued * queued_job_s
                if picked is None or starts_in < max(picked.busy_until, now) + len(picked.queue) * queued_job_s:
                    return worker
                return None
            heapq.heappop(self._heap)
        return None
