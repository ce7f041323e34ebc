"""The dispatcher alone (no sockets, an injected clock): routing, batching, re-dispatch, explicit failures."""

import asyncio
from collections import Counter

from pictures import image_as_asked

from controller.profiles import LatencyProfile
from engine.config import DispatchConfig
from engine.dispatcher import PIPELINE_HORIZON_S, Dispatcher
from engine.jobs import AdmittedRequest, Job
from engine.metrics import EngineMetrics
from engine.worker_registry import WorkerHandle, WorkerRegistry
from protocols.client_messages import Cancelled, Error, Generate, Images
from protocols.worker_messages import Abort, BatchDone, Hello, ItemCancelled, ItemDone, ItemFailed
from protocols.worker_messages import Generate as Batch


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Harness:
    def __init__(self, profile=None, escalate=False, on_image=None, slo_s=10.0, **config):
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
            on_image=on_image,
            escalate=escalate,
            slo_s=slo_s,
        )

    def _send(self, worker, message) -> bool:
        self.sent.append((worker.name, message))
        return True

    def add_worker(self, name: str, max_batch: int = 4, level: int = 0):
        hello = Hello(1, name, "sim", "sim:0", "sim", True, [5, 10], max_batch, 50, 64, 256, 64, level, 1)
        worker = self.registry.add(name.encode(), hello, level)
        self.dispatcher.worker_ready(worker)
        return worker

    def request(
        self,
        n=1,
        slo_ms=None,
        prompt="p",
        level=0,
        fallbacks=(),
        k_star=0,
        steps=50,
        chosen=True,
        negative=None,
        **spec_fields,
    ) -> AdmittedRequest:
        """An admitted request, routed at `level` unless not yet `chosen` (its level still being chosen)."""
        spec = Generate(
            request_id=f"r{len(self.sent)}-{prompt}",
            prompt=prompt,
            n=n,
            slo_ms=slo_ms,
            steps=steps,
            negative_prompt=negative,
            **spec_fields,
        )
        request = AdmittedRequest(
            spec=spec,
            width=64,
            height=64,
            steps=steps,
            seeds=list(range(n)),
            admitted_at=self.clock.now,
            deadline=self.clock.now + slo_ms / 1000 if slo_ms else None,
            future=asyncio.get_running_loop().create_future(),
        )
        self.dispatcher.admit(request)
        if chosen:
            self.dispatcher.route(request, level, None, None, fallbacks, k_star)
        return request

    def batches(self, worker_name=None) -> list[Batch]:
        return [m for w, m in self.sent if isinstance(m, Batch) and worker_name in (None, w)]

    def finish(self, worker, batch: Batch):
        image = image_as_asked(batch)
        done = [ItemDone(item.request_id, image, batch.level, [], None, 1.0, 50) for item in batch.items]
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


async def test_images_with_a_negative_prompt_batch_only_with_others_that_have_one():
    # SD-XL guides a batch by one kind of unconditional embedding: zeros with no negative prompt, encoded text with
    # one; mixed, the images without one would come out as they would not alone
    h = Harness(inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=4)
    h.request(prompt="first")
    for negative in ("blurry", None, "", "dark", None):
        h.request(negative=negative)
    h.finish(a, h.batches()[0])
    h.finish(a, h.batches()[1])
    items = [[item.negative_prompt for item in b.items] for b in h.batches()[1:]]
    assert items == [["blurry", "dark"], [None, None, None]]  # "" asks for none, as null does


async def test_pngs_that_differ_only_in_output_compression_batch_together():
    h = Harness(inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=4)
    h.request(prompt="first")
    for compression in (10, 90, None):
        h.request(output_compression=compression)
    h.request(output_format="jpeg", output_compression=10)  # a JPEG's is its quality: it goes alone
    h.finish(a, h.batches()[0])
    h.finish(a, h.batches()[1])
    assert [len(b.items) for b in h.batches()] == [1, 3, 1]


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
    # each image's queue time is observed once, for the run that made it
    assert h.metrics.registry.get_sample_value("argus_queue_seconds_count") == 2


async def test_a_lost_workers_jobs_are_each_sent_once_even_when_rerouting_one_frees_room_for_another():
    h = Harness(profile=PROFILE)
    a = h.add_worker("a")
    h.add_worker("b")
    h.request(), h.request()  # one running on each
    h.request(slo_ms=10_000)  # queued on a
    h.clock.now += 1.0 - PIPELINE_HORIZON_S / 2  # b's batch is about to end: b has room for one more
    held = {job.job_id for job in a.held_jobs()}
    before = len(h.batches())
    h.dispatcher.worker_lost(a, "exited")
    h.add_worker("c")
    sent = [item.request_id for batch in h.batches()[before:] for item in batch.items]
    assert sorted(sent) == sorted(held)


async def test_an_image_is_answered_even_when_handling_it_further_fails():
    def broken(worker, job, done):
        raise RuntimeError("a bug in caching what the image brought")

    h = Harness(on_image=broken)
    a = h.add_worker("a")
    request = h.request()
    (batch,) = h.batches()
    h.finish(a, batch)
    await settle()
    assert isinstance(request.future.result(), Images)
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


async def test_the_no_worker_timeout_runs_from_when_a_job_lost_its_worker_not_from_admission():
    h = Harness(no_worker_timeout_s=5)
    a = h.add_worker("a")
    request = h.request()
    h.clock.now += 60  # a long run
    h.dispatcher.worker_lost(a, "exited")
    h.clock.now += 1
    h.dispatcher.sweep()
    assert not request.done  # its replacement, restarting, still has time to take it
    h.add_worker("b")
    assert len(h.batches("b")) == 1


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


async def test_a_failure_is_a_worker_error_whatever_code_the_worker_names():
    """A worker's own code went to the client (a 429 with a made-up code at HTTP) and became a metric label."""
    h = Harness()
    a = h.add_worker("a")
    request = h.request()
    (batch,) = h.batches()
    h.dispatcher.batch_done(a, BatchDone(batch.batch_id, [ItemFailed(batch.items[0].request_id, "busy", "boom")]))
    await settle()
    assert (request.future.result().code, request.future.result().message) == ("worker_error", "boom")


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


async def test_deadlines_missed_are_counted_by_where_the_request_was_and_running_images_are_shown():
    """deadline_exceeded came from four places, and /metrics could not tell them apart."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=2)
    lonely = h.request(slo_ms=500)  # no worker yet
    h.clock.now += 1
    h.dispatcher.sweep()
    a = h.add_worker("a", max_batch=2)
    running = h.request(n=2, slo_ms=2_500)  # runs now: 2 s for the batch of 2
    assert h.metrics.registry.get_sample_value("argus_running_images") == 2
    predicted = h.request(slo_ms=2_500)  # would start after 2 s and need 1 s more
    h.clock.now += 3
    h.dispatcher.sweep()
    await settle()
    assert {r.future.result().code for r in (lonely, running, predicted)} == {"deadline_exceeded"}
    counted = {
        cause: h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": cause})
        for cause in ("no_worker", "running", "predicted")
    }
    assert counted == {"no_worker": 1, "running": 1, "predicted": 1}  # the request of 2 images counted once
    assert a.inflight and h.metrics.registry.get_sample_value("argus_running_images") == 2  # aborted, not answered


# level 25 runs in half the time of level 0
TWO_LEVELS = LatencyProfile("test", 50, {0: (1.0, 2.0), 25: (0.5, 1.0)}, "made up for the test")


async def test_a_job_too_slow_at_its_level_moves_up_to_its_fallback():
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=3, escalate=True)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # the worker is busy for 1 s
    # 1.6 s left: at level 0 it would end after 2 s, from its neighbour's level 25 after 1.5 s
    moved = h.request(slo_ms=1_600, fallbacks=((25, "latent-25"),))
    # 1.4 s left is too little even at level 25 (1.5 s)
    stuck = h.request(slo_ms=1_400, fallbacks=((25, "latent-25"),))
    await settle()
    assert not moved.done and stuck.future.result().code == "deadline_exceeded"
    assert len(h.batches()) == 1  # it waits for the worker to finish, not behind its batch
    h.finish(a, h.batches()[0])
    sent = h.batches()[1]
    assert (sent.level, sent.items[0].latent, sent.items[0].request_id) == (25, "latent-25", moved.jobs[0].job_id)
    assert h.metrics.escalated._value.get() == 1


async def test_a_costly_job_is_shed_so_that_two_cheaper_ones_behind_it_meet_their_deadlines():
    """A miss (all its steps) queued first used to keep its place while the hits behind it, half its time each,
    were answered deadline_exceeded: one image in time instead of two."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=2, escalate=True)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # the worker is busy for 1 s
    miss = h.request(slo_ms=2_100)  # must start within 1.1 s: it goes first, and would end at 2 s
    # behind it each would end late (2.5 s, 3 s); without it, at 1.5 s and 2 s
    hits = [h.request(slo_ms=slo_ms, level=25, k_star=25) for slo_ms in (2_000, 2_050)]
    h.dispatcher.sweep()
    await settle()
    assert miss.future.result().code == "deadline_exceeded"
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "shed"}) == 1
    h.clock.now += 1
    for hit in hits:  # each in turn, in time
        assert not hit.done
        h.finish(a, h.batches()[-1])
        assert h.batches()[-1].items[0].request_id == hit.jobs[0].job_id
        h.clock.now += 0.5
    h.finish(a, h.batches()[-1])
    await settle()
    assert all(isinstance(hit.future.result(), Images) for hit in hits)


async def test_a_job_is_not_shed_for_one_that_costs_as_much():
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=2, escalate=True)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # the worker is busy for 1 s
    first = h.request(slo_ms=2_100)
    second = h.request(slo_ms=2_200)  # behind the first it would end at 3 s: shedding the first saves nothing
    h.dispatcher.sweep()
    await settle()
    assert not first.done and not second.done
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "shed"}) is None


async def test_baselines_never_move_a_job_up():
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=2)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)
    doomed = h.request(slo_ms=1_600, fallbacks=((25, "latent-25"),))
    await settle()
    assert doomed.future.result().code == "deadline_exceeded"


async def test_late_jobs_are_served_when_the_engine_is_told_to():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=2, serve_late=True)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)
    late = h.request(slo_ms=1_500)
    await settle()
    assert len(h.batches()) == 1 and not late.done
    h.finish(a, h.batches()[0])
    assert len(h.batches()) == 2 and h.batches()[1].items[0].request_id == late.jobs[0].job_id


async def test_a_request_whose_deadline_passes_while_it_waits_is_served_late_when_told_to():
    """Before, --serve-late served late only what was already running: one queued, or waiting for a worker, past
    its deadline was answered deadline_exceeded all the same."""
    h = Harness(profile=PROFILE, serve_late=True)
    queued, waiting = h.request(slo_ms=10_000), h.request(slo_ms=1_000)  # no worker yet
    h.clock.now += 2
    h.dispatcher.sweep()
    a = h.add_worker("a", max_batch=1)
    later = h.request(slo_ms=1_000)  # queued behind the two
    h.clock.now += 2
    h.dispatcher.sweep()
    await settle()
    assert not any(request.done for request in (queued, waiting, later))
    for _ in range(3):
        h.finish(a, h.batches()[-1])
    await settle()
    assert all(isinstance(request.future.result(), Images) for request in (queued, waiting, later))


async def test_requests_served_late_leave_in_whole_batches():
    """Before, each job that could not meet its deadline went alone: a fleet serving late ran at batch 1."""
    h = Harness(profile=PROFILE, serve_late=True)
    a = h.add_worker("a", max_batch=4)
    h.request()  # runs for 1 s
    late = [h.request(slo_ms=500) for _ in range(8)]
    h.finish(a, h.batches()[0])
    h.finish(a, h.batches()[1])
    await settle()
    assert [len(batch.items) for batch in h.batches()] == [1, 4, 4]
    assert sum(request.done for request in late) == 4


async def test_a_request_whose_deadline_passes_while_its_image_runs_is_answered_then():
    """A worker slower than its profile (or hung): before, the request waited for its answer, however late."""
    h = Harness(profile=PROFILE)
    a = h.add_worker("a", max_batch=1)
    late = h.request(slo_ms=1_500)  # sent at once: 1 s by the profile
    (batch,) = h.batches()
    h.clock.now += 1.2
    h.dispatcher.sweep()
    assert not late.done  # late by the profile, not by its deadline: the answer may still come in time
    h.clock.now += 0.3
    h.dispatcher.sweep()
    await settle()
    assert late.future.result().code == "deadline_exceeded"
    assert any(isinstance(m, Abort) and m.request_ids == [batch.items[0].request_id] for _, m in h.sent)
    h.finish(a, batch)  # its late answer is ignored
    assert h.dispatcher.outstanding_images == 0 and not a.inflight


async def test_a_deadline_missed_waiting_for_a_worker_after_a_loss_is_counted_as_such():
    """Before, an image sent once was counted (and its client told) late while running, wherever it waited."""
    h = Harness(profile=PROFILE)
    a = h.add_worker("a", max_batch=1)
    request = h.request(slo_ms=1_500)
    h.dispatcher.worker_lost(a, "exited")  # its image waits for a worker now
    h.clock.now += 2
    h.dispatcher.sweep()
    await settle()
    assert "waited for a worker" in request.future.result().message
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "no_worker"}) == 1
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "running"}) is None


async def test_a_request_whose_deadline_passes_while_its_image_runs_is_served_late_when_told_to():
    h = Harness(profile=PROFILE, serve_late=True)
    a = h.add_worker("a", max_batch=1)
    late = h.request(slo_ms=1_500)
    h.clock.now += 2
    h.dispatcher.sweep()
    assert not late.done
    h.finish(a, h.batches()[0])
    assert isinstance(late.future.result(), Images)


async def test_a_second_batch_goes_to_a_busy_worker_only_when_its_running_one_is_about_to_end():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=2)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy for 1 s
    h.request(slo_ms=10_000)
    assert len(h.batches()) == 1  # kept here, where a worker that frees sooner could take it
    h.clock.now += 1.0 - PIPELINE_HORIZON_S / 2  # the running batch is about to end
    h.request(slo_ms=10_000)  # a routing event: the worker is pumped
    assert len(h.batches()) == 2 and len(a.inflight) == 2


async def test_batches_stop_at_the_size_the_head_deadline_allows():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=4)
    h.request()  # occupies the worker while the rest queue
    for _ in range(4):
        h.request(slo_ms=2_500)
    h.finish(a, h.batches()[0])
    # 2.5 s left: a batch of 2 (2 s) fits, a batch of 3 (3 s) does not
    assert [len(b.items) for b in h.batches()] == [1, 2]


async def test_a_worker_that_runs_dry_takes_the_oldest_jobs_queued_on_a_busy_one():
    h = Harness(inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=4)
    h.request()  # runs on a
    waiting = [h.request(prompt=f"w{i}") for i in range(3)]
    assert all(job.worker is a for r in waiting for job in r.jobs)  # queued behind a's running batch
    b = h.add_worker("b", max_batch=2)  # a worker joins, with nothing to do: it takes a's oldest two, one batch
    stolen = h.batches("b")[-1]
    assert [item.request_id for item in stolen.items] == [r.jobs[0].job_id for r in waiting[:2]]
    assert [j.worker.name for j in waiting[2].jobs] == ["a"]
    h.finish(a, h.batches("a")[0])
    assert [item.request_id for item in h.batches("a")[-1].items] == [waiting[2].jobs[0].job_id]
    for name, worker in (("a", a), ("b", b)):
        h.finish(worker, h.batches(name)[-1])
    await settle()
    assert all(isinstance(r.future.result(), Images) for r in waiting)
    assert h.dispatcher.outstanding_images == 0


async def test_a_freed_worker_serves_the_oldest_queued_job_whatever_its_level():
    h = Harness(inflight_batches_per_worker=1)
    a, b, c = h.add_worker("a"), h.add_worker("b", level=10), h.add_worker("c", level=10)
    h.request(level=0), h.request(level=10), h.request(level=10)  # each busy
    older_at_0 = h.request(level=0)
    at_10 = h.request(level=10)
    h.finish(c, h.batches("c")[0])
    assert [(m.level, [i.request_id for i in m.items]) for m in h.batches("c")[1:]] == [
        (0, [older_at_0.jobs[0].job_id])
    ]
    h.finish(b, h.batches("b")[0])
    assert h.batches("b")[-1].items[0].request_id == at_10.jobs[0].job_id
    assert not a.queue


# level 10 takes 0.8 s, level 25 half of level 0's time
THREE_LEVELS = LatencyProfile("test", 50, {0: (1.0, 2.0), 10: (0.8, 1.6), 25: (0.5, 1.0)}, "made up for the test")
LADDER = ((10, "latent-10"), (25, "latent-25"))


async def test_a_late_job_moves_up_only_as_far_as_its_deadline_needs():
    h = Harness(profile=THREE_LEVELS, inflight_batches_per_worker=1, escalate=True)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy for 1 s
    near = h.request(slo_ms=1_900, fallbacks=LADDER)  # 0.9 s after the wait: level 10 (0.8 s) will do
    far = h.request(slo_ms=1_600, fallbacks=LADDER)  # 0.6 s: only level 25 (0.5 s)
    assert [job.level for job in near.jobs + far.jobs] == [10, 25]
    assert far.jobs[0].fallbacks == () and near.jobs[0].fallbacks == (LADDER[1],)
    assert h.metrics.escalated._value.get() == 2
    h.finish(a, h.batches()[0])
    assert (h.batches()[-1].level, h.batches()[-1].items[0].latent) == (10, "latent-10")


async def test_an_image_moved_up_twice_is_counted_once():
    fast_top = LatencyProfile("test", 50, {0: (1.0, 2.0), 10: (0.8, 1.6), 25: (0.2, 0.4)}, "made up for the test")
    h = Harness(profile=fast_top, inflight_batches_per_worker=1, escalate=True)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy for 1 s
    moved = h.request(slo_ms=1_950, fallbacks=LADDER)  # 0.95 s after the wait: level 10 (0.8 s) makes it
    assert moved.jobs[0].level == 10 and h.metrics.escalated._value.get() == 1
    h.request(slo_ms=1_300, level=25)  # must start sooner: 0.2 s of work goes before the moved one
    h.dispatcher.sweep()  # 0.75 s left behind it: up again, to level 25
    assert moved.jobs[0].level == 25 and not moved.done
    assert h.metrics.escalated._value.get() == 1


async def test_an_upgrade_below_k_star_is_kept_only_on_a_free_worker():
    h = Harness(profile=THREE_LEVELS, inflight_batches_per_worker=1, escalate=True)
    h.add_worker("a", max_batch=1)
    upgraded = h.request(slo_ms=10_000, fallbacks=LADDER, k_star=10)  # the worker is free: exact, as planned
    waiting = h.request(slo_ms=10_000, fallbacks=LADDER, k_star=10)  # it must queue: back to its K*
    assert h.batches()[0].level == 0 and upgraded.jobs[0].level == 0
    assert waiting.jobs[0].level == 10 and waiting.jobs[0].latent == "latent-10"
    assert h.metrics.escalated._value.get() == 0  # not late: held at its own level


async def test_a_freed_worker_serves_the_job_that_must_start_soonest():
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy for 1 s
    hit = h.request(slo_ms=3_000, level=25)  # must start within 2.5 s
    h.clock.now += 0.2
    miss = h.request(slo_ms=3_000, level=0)  # came later, but must start within 2 s: it goes first
    h.finish(a, h.batches()[0])
    assert h.batches()[-1].items[0].request_id == miss.jobs[0].job_id
    h.finish(a, h.batches()[-1])
    assert h.batches()[-1].items[0].request_id == hit.jobs[0].job_id


async def test_a_job_that_must_queue_waits_on_the_worker_free_first():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1)
    a, b = h.add_worker("a"), h.add_worker("b")
    h.request()  # a: busy until 1001.0
    h.clock.now += 0.5
    h.request()  # b: busy until 1001.5
    first = h.request()  # both busy: it queues on a, free first
    second = h.request()  # a has one queued already (free at 1002.0): b is next free
    assert first.jobs[0].worker is a and second.jobs[0].worker is b


async def test_a_job_answered_at_the_head_of_its_queue_leaves_nothing_stuck_behind_it():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy for 1 s
    doomed = h.request(slo_ms=2_500)  # fits now (1 s wait + 1 s), not once the worker is late
    kept = h.request(slo_ms=10_000)
    h.clock.now += 2.0  # the first batch ends late: the doomed job can no longer make it
    h.finish(a, h.batches()[0])  # its answer and the next batch come in the same turn of the loop
    assert doomed.done and h.batches()[-1].items[0].request_id == kept.jobs[0].job_id
    h.finish(a, h.batches()[-1])
    await settle()
    assert doomed.future.result().code == "deadline_exceeded" and isinstance(kept.future.result(), Images)
    assert h.dispatcher.outstanding_images == 0


async def test_jobs_sent_beside_an_urgent_one_leave_no_entry_behind_in_the_queued_heap():
    h = Harness(profile=PROFILE)
    worker = h.add_worker("a", max_batch=4)
    requests = []
    for _ in range(300):
        # with a far deadline, and without (due one SLO after admission: ahead of the far ones)
        requests += [h.request(slo_ms=10**9), h.request(), h.request(slo_ms=10**9), h.request()]
        for batch in [b for b in h.batches("a") if b.batch_id in worker.inflight]:
            h.finish(worker, batch)
    await settle()
    assert sum(r.done for r in requests) >= len(requests) - 8
    # what is left are the entries of jobs still queued, plus bounded slack: not one per request served
    assert len(h.dispatcher._urgency) <= 2 * h.dispatcher.outstanding_images + 64


async def test_a_job_is_judged_by_the_worker_that_frees_first_not_the_one_it_queued_on():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1)
    a, b = h.add_worker("a", max_batch=1), h.add_worker("b", max_batch=1)
    h.request()  # a: busy until 1001.0
    h.clock.now += 0.9
    h.request()  # b: busy until 1001.9
    h.request()  # no deadline: queued, goes after the urgent one
    urgent = h.request(slo_ms=1500)  # due at 1002.4: 1.0 s of work once a frees
    assert urgent.jobs[0].worker is b and not urgent.done
    h.clock.now = a.busy_until
    h.finish(a, h.batches("a")[0])
    assert h.batches("a")[-1].items[0].request_id == urgent.jobs[0].job_id  # a takes it, in time


async def test_jobs_queued_to_go_after_a_job_do_not_move_it_up_a_level():
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1, escalate=True)
    a = h.add_worker("a", max_batch=1)
    h.request()  # running until 1001.0
    h.request()  # no deadline, queued before it
    job = h.request(slo_ms=2600, fallbacks=((25, "latent-25"),))  # at level 0 it ends at 1002.0, in time
    assert job.jobs[0].level == 0 and h.metrics.registry.get_sample_value("argus_escalated_images_total") == 0
    h.clock.now = 1001.0
    h.finish(a, h.batches()[0])
    assert h.batches()[-1].items[0].request_id == job.jobs[0].job_id and h.batches()[-1].level == 0


async def test_the_images_of_a_request_that_share_a_worker_leave_as_one_batch():
    h = Harness(profile=LatencyProfile("t", 50, {0: (1.0, 1.5)}, "a batch of 2 takes 1.5 s"))
    h.add_worker("a", max_batch=2)
    request = h.request(n=2, slo_ms=1800)  # one after the other would take 2 s; together, 1.5 s
    assert not request.done
    assert [len(batch.items) for batch in h.batches()] == [2]


async def test_the_images_of_a_request_spread_over_idle_workers():
    h = Harness()
    h.add_worker("a"), h.add_worker("b")
    h.request(n=2)
    assert sorted(worker for worker, _ in h.sent) == ["a", "b"]


async def test_a_requests_own_step_count_sets_its_deadline_maths():
    sdxl = LatencyProfile.bundled("sdxl_a100")  # 50 steps at K = 0: 5.1 s; 20 steps: 2.4 s; 150 steps: 14.1 s
    h = Harness(profile=sdxl)
    h.add_worker("a", max_batch=8)
    short = h.request(steps=20, slo_ms=3000)
    long = h.request(steps=150, slo_ms=6000)
    await settle()
    assert not short.done and [len(batch.items) for batch in h.batches()] == [1]
    assert long.future.result().code == "deadline_exceeded"


async def test_a_tight_job_is_not_batched_behind_a_laxer_one_queued_before_it():
    for late_by in (-PIPELINE_HORIZON_S / 2, 0.5):  # the running batch about to end, or running past its estimate
        h = Harness(profile=PROFILE)
        a = h.add_worker("a", max_batch=4)
        h.request()  # running until 1001.0
        lax = h.request(prompt="lax")  # no deadline: queued on a
        h.clock.now = a.busy_until + late_by
        tight = h.request(slo_ms=1_500, prompt="tight")  # alone, it ends 1 s from now: in time
        sent = h.batches()[-1]
        assert [item.request_id for item in sent.items] == [tight.jobs[0].job_id]
        assert a.busy_until <= tight.deadline and [job.worker for job in lax.jobs] == [a]


async def test_routing_an_image_that_must_queue_reads_neither_every_worker_nor_every_queued_job(monkeypatch):
    h = Harness(profile=PROFILE, max_queue=100_000)
    workers = [h.add_worker(f"w{i}") for i in range(256)]
    for _ in workers:
        h.request(slo_ms=10**6)  # every worker busy
    reads = Counter()
    load, is_queued = WorkerHandle.load.fget, h.dispatcher._is_queued
    monkeypatch.setattr(WorkerHandle, "load", property(lambda worker: reads.update(["worker"]) or load(worker)))
    monkeypatch.setattr(h.dispatcher, "_is_queued", lambda job: reads.update(["job"]) or is_queued(job))
    images = 512
    for i in range(images):
        h.request(slo_ms=10**6, prompt=f"p{i}")  # each queues, judged behind those queued before it
    assert all(job.worker is not None for job in h.dispatcher._live.values())
    # a pass over the fleet or the queue per image would be 256 to 512 reads each
    assert reads["worker"] < 4 * images and reads["job"] < 4 * images


async def test_a_request_without_a_deadline_is_served_as_if_due_one_slo_after_it_came():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=3.0)
    a = h.add_worker("a", max_batch=1)  # 1 s an image
    h.request(slo_ms=10_000)  # running until 1001.0
    patient = h.request(prompt="patient")  # no deadline: ranked as due at 1003.0
    (patient_job,) = patient.jobs  # released once answered
    for second in range(20):  # a 10 s-SLO request a second, as many as the worker serves
        h.request(slo_ms=10_000, prompt=f"d{second}")
        h.clock.now = a.busy_until
        h.finish(a, h.batches("a")[-1])
    await settle()
    assert isinstance(patient.future.result(), Images)
    assert patient_job.sent_at <= 1002.0  # behind the one running, and the one due at 1010.0 before it


async def test_a_job_joins_a_batch_only_as_large_as_its_own_deadline_allows():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=3.0)
    a = h.add_worker("a", max_batch=4)
    h.request()  # running until 1001.0
    patient = h.request(prompt="p")  # no deadline, ranked due at 1003.0: it leads the next batch
    h.clock.now += 0.5
    tight = [h.request(slo_ms=2_600, prompt="p") for _ in range(3)]  # due at 1003.1, ranked after it
    h.clock.now = 1001.0
    h.finish(a, h.batches()[0])
    # a batch of 2 ends at 1003.0, in time for the first; a batch of 4 would end at 1005.0
    assert [item.request_id for item in h.batches()[-1].items] == [patient.jobs[0].job_id, tight[0].jobs[0].job_id]
    assert a.busy_until <= tight[0].deadline


async def test_retiring_a_job_answered_as_it_was_routed_does_not_describe_the_whole_queue(monkeypatch):
    described = []
    monkeypatch.setattr(Job, "__repr__", lambda job: described.append(job.job_id) or job.job_id)
    h = Harness(profile=PROFILE)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # the worker is busy for 1 s
    doomed = h.request(slo_ms=1_500)  # answered at once: it has a worker but is in no queue
    await settle()  # its retirement runs
    assert doomed.future.result().code == "deadline_exceeded"
    # a deque's remove() names an item it lacks by its repr, which runs over every job and worker it reaches
    assert described == []


async def test_an_image_counts_at_the_level_its_batch_was_sent_at_whatever_the_worker_says():
    """The level in a worker's ItemDone was a Prometheus label: a buggy or hostile worker made a series per image."""
    h = Harness()
    a = h.add_worker("a")
    requests = [h.request(prompt=f"p{i}") for i in range(3)]
    answered = 0
    while answered < len(h.batches()):  # each answer lets the next queued batch go
        batch = h.batches()[answered]
        done = [ItemDone(i.request_id, image_as_asked(batch), 10**6 + answered, [], None, 1.0, 50) for i in batch.items]
        h.dispatcher.batch_done(a, BatchDone(batch.batch_id, done))
        answered += 1
    await settle()
    series = [s for m in h.metrics.registry.collect() if m.name == "argus_images" for s in m.samples]
    assert {(s.labels["level"], s.value) for s in series if s.name == "argus_images_total"} == {("0", 3.0)}
    assert all(isinstance(r.future.result(), Images) and r.future.result().images[0].level == 0 for r in requests)


async def test_workers_lost_leave_nothing_behind_in_the_idle_lists():
    h = Harness()
    h.add_worker("stays")
    for i in range(200):  # workers that come and go at a level no request asks for
        h.dispatcher.worker_lost(h.add_worker(f"churn-{i}", level=25), "exited")
    h.request()  # served by the one left, at level 0
    assert len(h.dispatcher._idle) <= 1


async def test_a_deadline_that_passes_while_the_level_is_chosen_is_answered_then():
    """The sweep looked only at routed jobs: a request waiting on a slow cache thread (a heavy embedder) was
    answered deadline_exceeded only once its level came back, however late."""
    h = Harness()
    h.add_worker("a")
    request = h.request(slo_ms=500, chosen=False)
    h.clock.now += 0.6
    h.dispatcher.sweep()
    await settle()
    reply = request.future.result()
    assert isinstance(reply, Error) and reply.code == "deadline_exceeded" and "level was chosen" in reply.message
    assert h.metrics.deadline_exceeded_by("queued")._value.get() == 1
    h.dispatcher.route(request, 0, None, None)  # the level, when it comes, sends nothing
    assert not h.batches() and h.dispatcher.outstanding_images == 0


async def test_a_request_served_late_is_not_answered_while_its_level_is_chosen():
    h = Harness(serve_late=True)
    h.add_worker("a")
    request = h.request(slo_ms=500, chosen=False)
    h.clock.now += 0.6
    h.dispatcher.sweep()
    await settle()
    assert not request.done
    h.dispatcher.route(request, 0, None, None)
    assert len(h.batches()) == 1
