"""The dispatcher's look-up structures (engine/dispatch/index.py) against what a scan of the fleet or the queue
would answer, through the re-filings, stale entries and compactions that a scan has none of."""

from __future__ import annotations

import gc
import random
import weakref

from engine.dispatch.index import HEAP_SLACK, FreeAt, IdleWorkers, QueuedWork, SentDeadlines, SpreadOver, UrgencyOrder
from engine.dispatch.jobs import AdmittedRequest
from engine.fleet.registry import WorkerHandle, WorkerState
from protocols.client_messages import Generate
from protocols.worker_messages import Hello


def worker(name: str, level: int = 0) -> WorkerHandle:
    hello = Hello(1, name, "sim", "sim:0", "sim", True, [5, 10], 4, 50, 64, 256, 64, level, 1)
    return WorkerHandle(name.encode(), hello, level, last_seen=0.0)


def request(n: int = 1, steps: int = 50, client: str = "a", deadline: float | None = None) -> AdmittedRequest:
    # the structures read a job's id, kind and client, never its future
    spec = Generate(request_id="r", prompt="p", n=n, steps=steps)
    return AdmittedRequest(spec, 64, 64, steps, list(range(n)), 0.0, deadline, future=None, client=client)


def one_second_an_image_below_25(start: int, steps: int) -> float:
    return (steps - start) / 50


class TestFreeAt:
    def test_soonest_agrees_with_a_scan_through_many_refilings(self):
        # enough filings to compact the groups' heaps many times over, each worker's entries in no order
        rng = random.Random(7)
        fleet = [worker(f"w{i}", level=rng.choice((0, 25))) for i in range(12)]
        free_at, joined = FreeAt(), {}
        for turn, w in enumerate(fleet):
            free_at.file(w)
            joined[w] = turn
        now = 0.0

        def starts_a_job_at(x: WorkerHandle) -> tuple:
            return max(x.busy_until, now) + len(x.queue) * 2.0, x.load, joined[x]

        for _ in range(40 * HEAP_SLACK):
            w = rng.choice(fleet)
            w.busy_until = now + rng.uniform(0.0, 5.0)
            w.queue.extend([None] * rng.randint(0, 1))
            if len(w.queue) > 2:
                w.queue.clear()
            w.inflight = {1: [None] * rng.randint(0, 3)}  # images held: a tie-break within a queue length
            w.level = rng.choice((0, 25)) if rng.random() < 0.1 else w.level
            free_at.file(w)
            now += rng.uniform(0.0, 0.3)
            for level in (0, 25, None):
                at_level = [x for x in fleet if level in (None, x.level)]
                best = min(at_level, key=starts_a_job_at, default=None)
                assert free_at.soonest(now, level, 2.0) is best
            assert free_at.first_free_in(now) == min(max(x.busy_until, now) for x in fleet) - now

    def test_soonest_at_a_level_with_no_worker_is_none(self):
        free_at = FreeAt()
        free_at.file(worker("w0", level=0))
        assert free_at.soonest(0.0, 25, 1.0) is None

    def test_a_dropped_worker_is_let_go(self):
        # a fleet whose workers come and go must not keep a handle (and what it holds) for each one gone
        free_at, gone = FreeAt(), worker("gone")
        free_at.file(gone)
        free_at.drop(gone)
        assert free_at.soonest(0.0, None, 1.0) is None
        released = weakref.ref(gone)
        del gone
        gc.collect()
        assert released() is None


class TestIdleWorkers:
    def test_a_worker_that_got_work_or_left_since_it_was_noted_is_passed_over(self):
        idle = IdleWorkers()
        busy, failing, free = worker("busy"), worker("failing"), worker("free")
        for w in (busy, failing, free):
            idle.add(w)
        busy.queue.append(None)
        failing.state = WorkerState.FAILING
        assert idle.pick(0) is free
        assert idle.pick(0) is None

    def test_a_worker_that_changed_level_is_picked_at_its_new_one(self):
        idle, moved = IdleWorkers(), worker("moved", level=0)
        idle.add(moved)
        moved.level = 25
        assert idle.pick(0) is None
        assert idle.pick(25) is moved


class TestQueuedWork:
    def test_a_client_holds_queued_jobs_until_its_last_leaves(self):
        work = QueuedWork(one_second_an_image_below_25)
        first, second = request(n=2, client="a").jobs
        work.add(first, 1.0)
        work.add(second, 2.0)
        work.add(request(client="b").jobs[0], 3.0)
        work.remove(first)
        work.remove(first)  # counted once: taken out once
        assert work.holds("a")
        work.remove(second)
        assert not work.holds("a") and work.holds("b")

    def test_jobs_ranked_anew_are_counted_at_their_new_keys_alone(self):
        work = QueuedWork(one_second_an_image_below_25)
        hit, first, second = request(n=3).jobs
        hit.start = 25
        for job, key in ((hit, 1.0), (first, 2.0), (second, 3.0)):
            work.add(job, key)
        work.rekey([(second, 0.5), (hit, 4.0)])
        assert [work.seconds_up_to(key) for key in (0.5, 2.0, 4.0)] == [1.0, 2.0, 2.5]
        assert work.key_of(hit) == 4.0 and work.key_of(first) == 2.0
        work.remove(second)
        assert work.seconds_up_to(0.5) == 0.0 and work.seconds() == 1.5

    def test_a_job_moved_up_is_counted_once_at_its_new_level_in_its_place(self):
        work = QueuedWork(one_second_an_image_below_25)
        moved, other = request(n=2).jobs
        work.add(moved, 1.0)
        work.add(other, 2.0)
        moved.level = moved.start = 25
        work.moved_up(moved)
        assert work.seconds() == 1.5
        assert work.seconds_up_to(1.0) == 0.5
        assert work.key_of(moved) == 1.0

    def test_costlier_up_to_weighs_only_jobs_keyed_at_or_before_the_key(self):
        work = QueuedWork(one_second_an_image_below_25)
        cheap, costly = request(n=2).jobs
        cheap.start = 25
        work.add(cheap, 1.0)
        work.add(costly, 5.0)
        assert not work.costlier_up_to(4.0, 0.5)
        assert work.costlier_up_to(4.0, 0.4)
        assert work.costlier_up_to(5.0, 0.9)
        assert not work.costlier_up_to(5.0, 1.0)


class TestUrgencyOrder:
    def test_rebuilt_in_any_order_the_most_urgent_comes_first(self):
        order = UrgencyOrder()
        late, soon, middle = request(n=3).jobs
        order.rebuild([(late, 9.0), (soon, 1.0), (middle, 5.0)])
        assert order.first(lambda job: True) is soon
        assert list(order.in_order(lambda job: True)) == [soon, middle, late]

    def test_a_job_routed_again_is_met_once(self):
        order = UrgencyOrder()
        again, other = request(n=2).jobs
        order.push(again, 3.0, 2, lambda job: True)
        order.push(other, 2.0, 2, lambda job: True)
        order.push(again, 1.0, 2, lambda job: True)
        assert list(order.in_order(lambda job: True)) == [again, other]

    def test_entries_of_jobs_gone_are_dropped_and_the_order_kept(self):
        # later jobs more urgent: entries kept in the order pushed would put the least urgent on top
        order, queued = UrgencyOrder(), set()
        jobs = request(n=20 * HEAP_SLACK).jobs
        for i, job in enumerate(jobs):
            queued.add(job.job_id)
            order.push(job, -float(i), len(queued), lambda job: job.job_id in queued)
            assert order.first(lambda job: job.job_id in queued) is job
            if i % 4:
                queued.discard(job.job_id)  # answered, or sent
            assert len(order) <= 2 * len(queued) + HEAP_SLACK + 2
        expected = [job for job in reversed(jobs) if job.job_id in queued]
        assert list(order.in_order(lambda job: job.job_id in queued)) == expected


class TestSentDeadlines:
    def test_deadlines_passed_are_told_in_order_through_compactions(self):
        deadlines, live = SentDeadlines(), set()
        rng = random.Random(3)
        kept = []
        for i in range(20 * HEAP_SLACK):
            job = request(deadline=rng.uniform(0.0, 100.0)).jobs[0]
            live.add(job.job_id)
            deadlines.watch([job], live)
            if i % 3:
                live.discard(job.job_id)
            else:
                kept.append(job)
        told = list(deadlines.passed(50.0))
        early = sorted((job for job in kept if job.request.deadline <= 50.0), key=lambda job: job.request.deadline)
        assert [job_id for job_id in told if job_id in live] == [job.job_id for job in early]


class TestSpreadOver:
    def test_a_noted_worker_is_taken_only_when_it_would_start_a_job_sooner(self):
        spread, noted, picked = SpreadOver(), worker("noted"), worker("picked")
        noted.queue.extend([None, None])
        spread.add(noted)
        picked.busy_until = 1.0
        assert spread.sooner_than(picked, 0.0, 1.0) is None  # 2 s of queue against 1 s of batches
        picked.busy_until = 3.0
        assert spread.sooner_than(picked, 0.0, 1.0) is noted
        assert spread.sooner_than(None, 0.0, 1.0) is noted
        noted.queue.append(None)  # it took another job: noted again when it does
        assert spread.sooner_than(None, 0.0, 1.0) is None
