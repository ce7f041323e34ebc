"""Moves of jobs out of and back into a worker's queue (a deque, in the order the jobs were queued there), each
touching only the jobs it moves and those queued before them, not the whole queue: under a deep --max-queue a
worker's queue holds tens of thousands of jobs, and a pass over one for every batch sent made the dispatcher's cost
per batch grow with the queue's depth (`argus bench engine --concurrency 20000` answered a quarter as many requests
a second as at 2,000). Jobs taken out together (those the sweep answers, those of requests cancelled together) leave
each queue in one pass, not a search of it for each; `discard` is that search, for a job leaving alone.

The most urgent job is most often at or near the head of its queue, its batch-mates right behind it: jobs queue in
the order they come, and that is mostly the order of their deadlines."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable

from engine.dispatch.jobs import Job
from engine.fleet.registry import WorkerHandle


def take_with_mates(queue: deque[Job], job: Job, most: int) -> list[Job]:
    """Takes out of `queue` the job and the first jobs queued there (before or after it) that share its batch key,
    up to `most` jobs in all, the job first and its mates in their queue order; the jobs left keep their order.
    Reads the queue up to the job and its last mate taken: to its end only when it holds fewer mates than that."""
    key = job.key
    mates: list[Job] = []
    found = False
    read = 0
    for other in queue:
        read += 1
        if other is job:
            found = True
        elif len(mates) < most - 1 and other.key == key:
            mates.append(other)
        if found and len(mates) >= most - 1:
            break
    taken = [job, *mates]  # most >= 1: a worker says it batches 1 at least (engine/fleet/hello_check.py)
    _take_from_head(queue, read, taken)
    return taken


def _take_from_head(queue: deque[Job], read: int, taken: list[Job]) -> None:
    """Takes `taken`, jobs among the first `read` of `queue`, out of it; the jobs left keep their order."""
    moving = set(map(id, taken))
    read_part = [queue.popleft() for _ in range(read)]
    put_back(queue, [other for other in read_part if id(other) not in moving])


# how far into each other worker's queue a batch's mates are looked for: jobs queue in the order they come, mostly that
# of their deadlines, so the mates that can still share a batch are near the head; a deeper look would make each batch
# sent read every queue, tens of thousands of jobs under a deep --max-queue
MATES_LOOKED_AT = 16
# and in how many other queues: the ones read first hold enough mates for a batch when a burst spreads them, and a
# batch sent with none to gather would otherwise read every busy worker's queue (a thousand, at 16 jobs each)
QUEUES_LOOKED_AT = 32


def gather_mates(worker: WorkerHandle, workers: Iterable[WorkerHandle], most: int) -> list[WorkerHandle]:
    """Moves jobs that share the batch key of the job heading `worker`'s queue from the heads of the other `workers`'
    queues (their first MATES_LOOKED_AT jobs, in the first QUEUES_LOOKED_AT queues not empty) to right behind it,
    until `most` jobs of that key lead its queue; the jobs left keep their order. Returns the workers jobs were taken
    from.

    Jobs that must queue go to whichever worker should be free first, so in a burst those of one key lie a few on each
    worker's queue, and the worker free first, taking its mates from one queue, sent batches of one or two where four
    were waiting: a batch of four exact images takes 12.75 s on the sim profile, four batches of one 20.4 s."""
    queue = worker.queue
    key = queue[0].key
    wanted = most - sum(1 for job in itertools.islice(queue, most) if job.key == key)
    gathered: list[Job] = []
    taken_from: list[WorkerHandle] = []
    others = (other for other in workers if other is not worker and other.queue)
    for other in itertools.islice(others, QUEUES_LOOKED_AT):
        if wanted <= 0:
            break
        looked = list(itertools.islice(other.queue, MATES_LOOKED_AT))
        mates = [job for job in looked if job.key == key][:wanted]
        if mates:
            _take_from_head(other.queue, len(looked), mates)
            for job in mates:
                job.worker = worker
            gathered += mates
            taken_from.append(other)
            wanted -= len(mates)
    if gathered:
        put_back(queue, [queue.popleft(), *gathered])
    return taken_from


def put_back(queue: deque[Job], jobs: list[Job]) -> None:
    """Puts `jobs`, taken from the head of `queue`, back at its head in their order."""
    queue.extendleft(reversed(jobs))


def discard(queue: deque[Job], job: Job) -> None:
    """Takes the job out of `queue` if it is there: a search of the queue, for one job alone."""
    # not remove() alone: for an item it lacks, a deque names it by its repr, and a job's runs over every request, job
    # and worker it reaches (a job answered as it was routed has a worker but is in no queue)
    if job in queue:
        queue.remove(job)


def take_out(jobs: list[Job]) -> list[WorkerHandle]:
    """Takes the queued `jobs` out of their workers' queues, the others keeping their order, in one pass over each
    queue; returns those workers. A search for each (`queue.remove`) read the queue once a job, and again as its
    request retired: 8,000 jobs past their deadline queued behind 8,000 without one held the engine's loop 2.4 s as
    the sweep answered them (0.13 s now)."""
    leaving: dict[WorkerHandle, set[int]] = {}
    for job in jobs:
        leaving.setdefault(job.worker, set()).add(id(job))
    for worker, ids in leaving.items():
        staying = [job for job in worker.queue if id(job) not in ids]
        worker.queue.clear()
        worker.queue.extend(staying)
    return list(leaving)
