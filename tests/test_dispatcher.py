"""The dispatcher alone (no sockets, an injected clock): routing, batching, re-dispatch, explicit failures."""

import asyncio

from controller.profiles import LatencyProfile
from engine.config import DispatchConfig
from engine.dispatcher import Dispatcher
from engine.jobs import AdmittedRequest
from engine.metrics import EngineMetrics
from engine.worker_registry import WorkerRegistry
from protocols.client_messages import Cancelled, Error, Generate, Images
from protocols.codec import Blob
from protocols.worker_messages import Abort, BatchDone, Hello, ItemCancelled, ItemDone, ItemFailed
from protocols.worker_messages import Generate as Batch


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Harness:
    def __init__(self, profile=None, escalate=False, **config):
        self.clock = Clock()
        self.metrics = EngineMetrics()
        self.registry = WorkerRegistry(self.metrics)
        self.sent: list[tuple[str, object]] = []
        self.dispatcher = Dispatcher(
            self.registry,
            self._send,
            self.metrics,
            DispatchConfig(**config),
            clock=self.clock,
            profile=profile,
            escalate=escalate,
        )

    def _send(self, worker, message) -> bool:
        self.sent.append((worker.name, message))
        return True

    def add_worker(self, name: str, max_batch: int = 4, level: int = 0):
        hello = Hello(1, name, "sim", "sim", True, [5, 10], max_batch, 50, 64, 256, 64, level, 1)
        worker = self.registry.add(name.encode(), hello, level)
        self.dispatcher.worker_ready(worker)
        return worker

    def request(self, n=1, slo_ms=None, prompt="p", level=0, fallback=None) -> AdmittedRequest:
        spec = Generate(request_id=f"r{len(self.sent)}-{prompt}", prompt=prompt, n=n, slo_ms=slo_ms)
        request = AdmittedRequest(
            spec=spec,
            width=64,
            height=64,
            steps=50,
            seeds=list(range(n)),
            admitted_at=self.clock.now,
            deadline=self.clock.now + slo_ms / 1000 if slo_ms else None,
            future=asyncio.get_running_loop().create_future(),
        )
        self.dispatcher.admit(request)
        self.dispatcher.route(request, level=level, latent=None, similarity=None, fallback=fallback)
        return request

    def batches(self, worker_name=None) -> list[Batch]:
        return [m for w, m in self.sent if isinstance(m, Batch) and worker_name in (None, w)]

    def finish(self, worker, batch: Batch):
        done = [ItemDone(item.request_id, Blob(b"img"), batch.level, [], None, 1.0, 50) for item in batch.items]
        self.dispatcher.batch_done(worker, BatchDone(batch.batch_id, done))


async def settle():
    await asyncio.sleep(0)  # let done-callbacks run


async def test_requests_spread_over_idle_workers():
    h = Harness()
    h.add_worker("a"), h.add_worker("b")
    h.request(), h.request()
    assert {w for w, m in h.sent} == {"a", "b"}


async def test_idle_workers_are_found_at_their_current_level():
    h = Harness()
    a, b = h.add_worker("a"), h.add_worker("b")
    h.dispatcher.worker_level_set(b, 10)  # moved while idle
    h.request(level=10)
    assert [(w, m.level) for w, m in h.sent] == [("b", 10)]
    h.request(level=0)
    assert h.sent[-1][0] == "a"
    h.finish(a, h.batches("a")[0])
    h.request(level=0)  # a is idle again: it takes the job, not b (busy, and at another level)
    assert h.sent[-1][0] == "a" and len(h.batches("a")) == 2
    h.finish(b, h.batches("b")[0])
    h.request(level=0)  # a busy, b idle at 10: b takes it rather than let it queue
    assert h.sent[-1][0] == "b" and h.sent[-1][1].level == 0


async def test_queued_jobs_with_the_same_key_batch_together():
    h = Harness(inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=3)
    first = h.request()
    rest = [h.request() for _ in range(4)]
    assert [len(b.items) for b in h.batches()] == [1]
    h.finish(a, h.batches()[0])
    assert [len(b.items) for b in h.batches()] == [1, 3]
    assert first.done and isinstance(first.future.result(), Images)
    assert sum(r.done for r in rest) == 0


async def test_lost_worker_jobs_go_to_another_worker_once():
    h = Harness()
    a, b = h.add_worker("a"), h.add_worker("b")
    request = h.request(n=2)
    assert {w for w, m in h.sent} == {"a", "b"}
    h.dispatcher.worker_lost(a, "exited")
    resent = h.batches("b")
    assert len(resent) == 2
    for batch in resent:
        h.finish(b, batch)
    await settle()
    reply = request.future.result()
    assert isinstance(reply, Images) and len(reply.images) == 2
    assert h.dispatcher.outstanding_images == 0


async def test_a_job_that_keeps_losing_workers_fails_explicitly():
    h = Harness(max_attempts=2)
    request = h.request()
    for name in ("a", "b"):
        worker = h.add_worker(name)
        h.dispatcher.worker_lost(worker, "exited")
    await settle()
    reply = request.future.result()
    assert isinstance(reply, Error) and reply.code == "worker_lost"
    assert h.dispatcher.outstanding_images == 0


async def test_no_worker_at_all_fails_after_the_timeout():
    h = Harness(no_worker_timeout_s=5)
    request = h.request()
    h.dispatcher.sweep()
    assert not request.done
    h.clock.now += 6
    h.dispatcher.sweep()
    await settle()
    assert request.future.result().code == "no_worker"
    assert h.dispatcher.outstanding_images == 0


async def test_deadline_passed_in_queue_is_answered_not_dropped():
    h = Harness(inflight_batches_per_worker=1)
    h.add_worker("a", max_batch=1)
    h.request()
    late = h.request(slo_ms=100)
    h.clock.now += 1
    h.dispatcher.sweep()
    await settle()
    reply = late.future.result()
    assert isinstance(reply, Error) and reply.code == "deadline_exceeded"
    assert len(h.batches()) == 1


async def test_failure_of_one_image_fails_the_request_and_aborts_siblings():
    h = Harness()
    a = h.add_worker("a", max_batch=1)
    request = h.request(n=2)
    first, second = h.batches("a")
    h.dispatcher.batch_done(
        a, BatchDone(first.batch_id, [ItemFailed(first.items[0].request_id, "worker_error", "boom")])
    )
    await settle()
    assert request.future.result().code == "worker_error"
    assert any(isinstance(m, Abort) and m.request_ids == [second.items[0].request_id] for _, m in h.sent)
    # the aborted sibling's late answer is ignored, and nothing is left behind
    h.dispatcher.batch_done(a, BatchDone(second.batch_id, [ItemCancelled(second.items[0].request_id)]))
    assert h.dispatcher.outstanding_images == 0 and not a.inflight


async def test_cancel_removes_queued_work_and_replies_once():
    h = Harness(inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=1)
    running = h.request()
    queued = h.request()
    h.dispatcher.cancel(queued)
    await settle()
    assert isinstance(queued.future.result(), Cancelled)
    assert not a.queue
    h.finish(a, h.batches()[0])
    assert isinstance(running.future.result(), Images)
    assert len(h.batches()) == 1  # the cancelled one was never sent


async def test_worker_cancelling_on_its_own_means_the_image_is_still_owed():
    h = Harness()
    a, b = h.add_worker("a"), h.add_worker("b")
    request = h.request()
    (batch,) = h.batches()
    owner = a if h.sent[0][0] == "a" else b
    h.dispatcher.batch_done(owner, BatchDone(batch.batch_id, [ItemCancelled(batch.items[0].request_id)]))
    assert len(h.batches()) == 2 and not request.done


# one second for one image, a second more for each further image
PROFILE = LatencyProfile("test", 50, {0: (1.0, 2.0, 3.0, 4.0)}, "made up for the test")


async def test_a_job_that_cannot_meet_its_deadline_is_answered_at_once():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=2)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # runs now: the worker is busy for 1 s
    doomed = h.request(slo_ms=1_500)  # would start after 1 s and need 1 s more
    await settle()
    assert doomed.future.result().code == "deadline_exceeded"
    assert len(h.batches()) == 1


# level 25 runs in half the time of level 0
TWO_LEVELS = LatencyProfile("test", 50, {0: (1.0, 2.0), 25: (0.5, 1.0)}, "made up for the test")


async def test_a_job_too_slow_at_its_level_moves_up_to_its_fallback():
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=3, escalate=True)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # the worker is busy for 1 s
    # 1.6 s left: at level 0 it would end after 2 s, from its neighbour's level 25 after 1.5 s
    moved = h.request(slo_ms=1_600, fallback=(25, "latent-25"))
    # then busy for 1.5 s: 1.8 s left is too little even at level 25 (2 s)
    stuck = h.request(slo_ms=1_800, fallback=(25, "latent-25"))
    await settle()
    assert not moved.done and stuck.future.result().code == "deadline_exceeded"
    sent = h.batches()[1]
    assert len(h.batches()) == 2
    assert (sent.level, sent.items[0].latent, sent.items[0].request_id) == (25, "latent-25", moved.jobs[0].job_id)
    assert h.metrics.escalated._value.get() == 1


async def test_baselines_never_move_a_job_up():
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=2)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)
    doomed = h.request(slo_ms=1_600, fallback=(25, "latent-25"))
    await settle()
    assert doomed.future.result().code == "deadline_exceeded"


async def test_late_jobs_are_served_when_the_engine_is_told_to():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=2, serve_late=True)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)
    late = h.request(slo_ms=1_500)
    assert len(h.batches()) == 2 and not late.done


async def test_batches_stop_at_the_size_the_head_deadline_allows():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=4)
    h.request()  # occupies the worker while the rest queue
    for _ in range(4):
        h.request(slo_ms=2_500)
    h.finish(a, h.batches()[0])
    # 2.5 s left: a batch of 2 (2 s) fits, a batch of 3 (3 s) does not
    assert [len(b.items) for b in h.batches()] == [1, 2]
