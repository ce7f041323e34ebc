"""Moves of jobs out of and back into a worker's queue (a deque, in the order the jobs were queued there), each
touching only the jobs it moves and those queued before them, not the whole queue: under a deep --max-queue a
worker's queue holds tens of thousands of jobs, and a pass over one for every batch sent made the dispatcher's cost
per batch grow with the queue's depth (`argus bench engine --concurrency 20000` answered a quarter as many requests
a second as at 2,000). Jobs taken out together (those the sweep answers, those of requests cancelled together) leave
each queue in one pass, not a search of it for each; `discard` is that search, for a job leaving alone.

The most urgent job is most often at or near the head of its queue, its batch-mates right behind it: jobs queue in
the order they come, and that is mostly the order of their deadlines."""

from __future__ import annotations

from collections import deque

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
    moving = set(map(id, taken))
    read_part = [queue.popleft() for _ in range(read)]
    put_back(queue, [other for other in read_part if id(other) not in moving])
    return taken


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
