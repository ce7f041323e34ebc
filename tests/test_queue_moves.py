"""Moving jobs out of a worker's queue (engine/dispatch/queue_moves.py): a job and its batch-mates, the jobs a pass over
the whole queue would take, in its order, while reading only the part of the queue they are in; one job alone; and jobs
taken out together, in one pass over each queue."""

from __future__ import annotations

import random
from collections import deque

import pytest

from engine.dispatch.jobs import AdmittedRequest, Job
from engine.dispatch.queue_moves import (
    MATES_LOOKED_AT,
    QUEUES_LOOKED_AT,
    discard,
    gather_mates,
    put_back,
    take_out,
    take_with_mates,
)
from protocols.client_messages import Generate


def jobs(n: int, steps: int = 50) -> list[Job]:
    spec = Generate(request_id=f"r{steps}", prompt="p", n=n, steps=steps)
    return AdmittedRequest(spec, 64, 64, steps, list(range(n)), 0.0, None, future=None).jobs


def taken_by_a_whole_pass(queue: deque[Job], job: Job, most: int) -> tuple[list[Job], list[Job]]:
    """What the dispatcher took before: the job, then every other of its key in queue order, cut to `most`; and the
    queue left."""
    taken = [job, *(other for other in queue if other is not job and other.key == job.key)][:most]
    return taken, [other for other in queue if all(other is not t for t in taken)]


class Unread:
    """A queued job past the part of the queue a move should read: reading its key fails the test."""

    job_id = "unread"

    @property
    def key(self):
        pytest.fail("read a job queued past the job taken and its mates")


@pytest.mark.parametrize("seed", range(20))
def test_takes_what_a_whole_pass_takes_and_leaves_the_rest_in_order(seed):
    rng = random.Random(seed)
    mixed = jobs(30, steps=50) + jobs(30, steps=40)  # two batch keys
    rng.shuffle(mixed)
    queue = deque(mixed[: rng.randint(1, 60)])
    job, most = rng.choice(list(queue)), rng.randint(1, 8)
    expected_taken, expected_left = taken_by_a_whole_pass(queue, job, most)
    assert take_with_mates(queue, job, most) == expected_taken
    assert list(queue) == expected_left


def test_the_job_leads_its_mates_queued_before_it_in_their_order():
    first, second, urgent, last = jobs(4)
    other_key = jobs(1, steps=40)[0]
    queue = deque([first, other_key, second, urgent, last])
    assert take_with_mates(queue, urgent, 3) == [urgent, first, second]
    assert list(queue) == [other_key, last]


class CountedReads(deque):
    """A queue that counts the jobs a move reads of it."""

    read = 0

    def __iter__(self):
        for job in super().__iter__():
            self.read += 1
            yield job


def test_reads_the_queue_only_as_far_as_the_job_and_its_last_mate():
    head = jobs(4)
    queue = CountedReads([*head, *[Unread() for _ in range(1000)]])
    assert take_with_mates(queue, head[2], 3) == [head[2], head[0], head[1]]
    # not one job past them either, though its key goes unread once the mates are found
    assert queue.read == 3
    assert list(queue)[0] is head[3] and len(queue) == 1001


def test_discard_takes_the_job_out_and_leaves_a_queue_without_it_as_it_was():
    """A job answered as it was routed has a worker but is in no queue: discarding it there is no error."""
    first, job, last = jobs(3)
    queue = deque([first, job, last])
    discard(queue, job)
    assert list(queue) == [first, last]
    discard(queue, job)
    assert list(queue) == [first, last]


class Worker:
    """What take_out reads of a worker: its queue."""

    def __init__(self, queued: list[Job]) -> None:
        self.queue = deque(queued)
        for job in queued:
            job.worker = self


def test_take_out_leaves_each_queue_without_the_jobs_in_order_and_names_the_workers_it_touched():
    one, two, untouched = Worker(jobs(4)), Worker(jobs(3, steps=40)), Worker(jobs(2, steps=30))
    first, second, third, fourth = one.queue
    kept_by_two = list(two.queue)[1:]
    assert take_out([third, two.queue[0], first]) == [one, two]  # the workers in the order their jobs came
    assert list(one.queue) == [second, fourth]
    assert list(two.queue) == kept_by_two
    assert len(untouched.queue) == 2


def test_gather_mates_brings_the_heads_mates_from_other_queues_behind_it_and_leaves_the_rest_in_order():
    lead, own_mate = jobs(2)
    other_key = jobs(2, steps=40)
    here = Worker([lead, other_key[0], own_mate])
    mates_there = jobs(3)
    there = Worker([other_key[1], mates_there[0], mates_there[1]])
    far = Worker([mates_there[2]])
    empty = Worker([])
    # four lead: the head, its mate queued here, and two from the first other queue; the third is left where it was
    assert gather_mates(here, [here, empty, there, far], most=4) == [there]
    assert list(here.queue) == [lead, mates_there[0], mates_there[1], other_key[0], own_mate]
    assert all(job.worker is here for job in mates_there[:2])
    assert list(there.queue) == [other_key[1]]
    assert list(far.queue) == [mates_there[2]] and mates_there[2].worker is far


def test_gather_mates_reads_another_queue_no_further_than_its_head():
    lead = jobs(1)[0]
    here = Worker([lead])
    unrelated = jobs(MATES_LOOKED_AT, steps=40)
    there = Worker([*unrelated, *[Unread() for _ in range(1000)]])
    assert gather_mates(here, [here, there], most=4) == []
    assert list(here.queue) == [lead]
    assert list(there.queue)[:MATES_LOOKED_AT] == unrelated and len(there.queue) == MATES_LOOKED_AT + 1000


def test_gather_mates_reads_no_more_queues_than_its_bound():
    here = Worker(jobs(1))
    # a thousand busy workers holding no mate, then one holding one: a batch sent read every queue
    unrelated = [Worker(jobs(1, steps=40)) for _ in range(1000)]
    holding = Worker(jobs(1))
    read: list[Worker] = []

    def busy():
        for other in [*unrelated, holding]:
            read.append(other)
            yield other

    assert gather_mates(here, busy(), most=4) == []
    assert len(read) == QUEUES_LOOKED_AT and len(holding.queue) == 1


def test_put_back_restores_the_head_in_order():
    queue = deque(jobs(5))
    original = list(queue)
    taken = [queue.popleft() for _ in range(3)]
    put_back(queue, taken)
    assert list(queue) == original
