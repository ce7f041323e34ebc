"""A deep queue (a large --max-queue): a worker taking the most urgent job from another's queue, and the sweep, read
only the jobs they move or judge, not every job queued, and still take them in the order of urgency."""

from __future__ import annotations

from collections import Counter

from dispatcher_harness import PROFILE, Harness, settle

from engine.dispatch.jobs import Job
from protocols.client_messages import Cancelled

DEEP = 1000


def count_reads(monkeypatch, h: Harness) -> Counter:
    """Counts the batch keys and the queued checks read from now on."""
    reads = Counter()
    key, is_queued = Job.key.fget, h.dispatcher._is_queued
    monkeypatch.setattr(Job, "key", property(lambda job: reads.update(["key"]) or key(job)))
    monkeypatch.setattr(h.dispatcher, "_is_queued", lambda job: reads.update(["queued"]) or is_queued(job))
    return reads


async def test_a_freed_worker_takes_the_most_urgent_job_led_before_the_mates_queued_first():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=2)
    h.request()  # a is busy for 1 s: the rest queue on it
    first = h.request(prompt="first")
    other_key = h.request(prompt="other", negative="blurry")
    second = h.request(prompt="second")
    urgent = h.request(prompt="urgent", slo_ms=5_000)  # must start by 1004.0, the others by 1009.0
    last = h.request(prompt="last")
    assert [job.worker for r in (first, other_key, second, urgent, last) for job in r.jobs] == [a] * 5
    h.add_worker("b", max_batch=2)
    ids = [item.request_id for item in h.batches("b")[0].items]
    assert ids == [urgent.jobs[0].job_id, first.jobs[0].job_id]
    assert list(a.queue) == [*other_key.jobs, *second.jobs, *last.jobs]


async def test_a_worker_taking_from_a_deep_queue_reads_only_its_head(monkeypatch):
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, max_queue=10 * DEEP)
    a = h.add_worker("a", max_batch=4)
    requests = [h.request(prompt=f"p{i}") for i in range(DEEP + 1)]  # one runs, the rest queue on a
    reads = count_reads(monkeypatch, h)
    h.add_worker("b", max_batch=4)
    assert [item.request_id for item in h.batches("b")[0].items] == [r.jobs[0].job_id for r in requests[1:5]]
    assert len(a.queue) == DEEP - 4
    assert reads["key"] < 50  # a pass over a's queue reads a thousand


async def test_the_sweep_reads_no_queued_job_while_none_has_a_deadline(monkeypatch):
    h = Harness(profile=PROFILE, max_queue=10 * DEEP)
    h.add_worker("a")
    for i in range(DEEP):
        h.request(prompt=f"p{i}")
    reads = count_reads(monkeypatch, h)
    h.dispatcher.sweep()
    assert reads["queued"] == 0


async def test_served_late_the_sweep_reads_no_queued_job(monkeypatch):
    h = Harness(profile=PROFILE, max_queue=10 * DEEP, serve_late=True)
    h.add_worker("a")
    for i in range(DEEP):
        h.request(prompt=f"p{i}", slo_ms=10_000)
    reads = count_reads(monkeypatch, h)
    h.clock.now += 20.0  # every deadline passed: served late all the same
    h.dispatcher.sweep()
    assert reads["queued"] == 0


async def test_a_job_with_a_deadline_behind_a_deep_queue_is_still_answered_by_the_sweep():
    h = Harness(profile=PROFILE, max_queue=10 * DEEP)
    h.add_worker("a")
    backlog = [h.request(prompt=f"p{i}") for i in range(DEEP)]
    due = h.request(prompt="due", slo_ms=20_000)  # ranked behind the backlog: its deadline passes as it waits
    sent = len(h.batches())
    h.clock.now += 20.0
    h.dispatcher.sweep()
    await settle()
    assert due.future.result().code == "deadline_exceeded"
    assert not any(r.done for r in backlog[sent:]) and len(h.batches()) == sent


def count_comparisons(monkeypatch) -> Counter:
    """Counts the jobs compared with another from now on: what a search of a queue for a job (`job in queue`) does
    for each job it passes."""
    compared = Counter()
    monkeypatch.setattr(Job, "__eq__", lambda job, other: compared.update(["job"]) or job is other)
    return compared


async def test_jobs_answered_by_the_sweep_leave_a_deep_queue_in_one_pass(monkeypatch):
    """Each job the sweep answered deadline_exceeded was searched for in its worker's queue, then again as its request
    retired: 8,000 past their deadline behind 8,000 without one held the engine's loop 2.4 s."""
    h = Harness(profile=PROFILE, max_queue=10 * DEEP)
    a = h.add_worker("a")
    kept = [h.request(prompt=f"kept{i}") for i in range(DEEP)]  # no deadline: still queued after the sweep
    late = [h.request(prompt=f"late{i}", slo_ms=30_000) for i in range(DEEP)]  # queued behind them
    queued = [job for job in a.queue]
    compared = count_comparisons(monkeypatch)
    h.clock.now += 40.0
    h.dispatcher.sweep()
    await settle()
    assert all(r.future.result().code == "deadline_exceeded" for r in late)
    assert not any(r.done for r in kept[1:])  # the first was sent
    assert list(a.queue) == [job for job in queued if not job.request.done]
    assert compared["job"] < 10 * DEEP  # a search per job read two million


async def test_requests_cancelled_together_leave_a_deep_queue_in_one_pass(monkeypatch):
    """A stop's cancel_all, or a client gone: each job cancelled was searched for in its worker's queue as its request
    retired, from the queue's head, however far down it was (cancel_all takes them in no order of the queue's): the
    second stop signal of an engine holding 20,000 queued ended it in 3.6-4 s, 0.9-1.1 s now."""
    h = Harness(profile=PROFILE, max_queue=10 * DEEP)
    a = h.add_worker("a")
    kept = [h.request(prompt=f"kept{i}") for i in range(DEEP)]
    gone = [h.request(prompt=f"gone{i}") for i in range(DEEP)]
    queued = [job for job in a.queue]
    compared = count_comparisons(monkeypatch)
    h.dispatcher.cancel(*gone)
    await settle()
    assert all(isinstance(r.future.result(), Cancelled) for r in gone)
    assert list(a.queue) == [job for job in queued if not job.request.done] and not any(r.done for r in kept[1:])
    assert compared["job"] < 10 * DEEP  # a search per job read a million
    h.dispatcher.cancel_all()
    await settle()
    assert not a.queue and all(r.done for r in kept) and compared["job"] < 20 * DEEP
