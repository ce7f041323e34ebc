"""Taking a job and its batch-mates out of a worker's queue (engine/queue_moves.py): the jobs a pass over the whole
queue would take, in its order, while reading only the part of the queue they are in."""

from __future__ import annotations

import random
from collections import deque

import pytest

from engine.jobs import AdmittedRequest, Job
from engine.queue_moves import put_back, take_with_mates
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


def test_reads_the_queue_only_as_far_as_the_job_and_its_last_mate():
    head = jobs(4)
    queue = deque([*head, *[Unread() for _ in range(1000)]])
    assert take_with_mates(queue, head[2], 3) == [head[2], head[0], head[1]]
    assert list(queue)[0] is head[3] and len(queue) == 1001


def test_put_back_restores_the_head_in_order():
    queue = deque(jobs(5))
    original = list(queue)
    taken = [queue.popleft() for _ in range(3)]
    put_back(queue, taken)
    assert list(queue) == original
