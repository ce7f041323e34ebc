"""A request answered (failed, cancelled, past its deadline) leaves the dispatcher at once: none of its images still in
a batch or a queue is queued or sent again, though its reply's done-callbacks run only a loop turn later."""

from dispatcher_harness import Harness, settle

from protocols.client_messages import Error
from protocols.worker_messages import Abort, BatchDone, ItemCancelled, ItemFailed
from protocols.worker_messages import Generate as Batch


def _queued(h: Harness) -> list[str]:
    return [job.job_id for worker in h.registry.registered() for job in worker.queue]


async def test_an_image_given_back_after_its_requests_failure_in_the_same_batch_is_not_queued_again():
    h = Harness()
    worker = h.add_worker("a")
    request = h.request(n=2)
    (batch,) = h.batches()
    first, second = (item.request_id for item in batch.items)
    failed = ItemFailed(first, "oom", "out of memory")
    h.dispatcher.batch_done(worker, BatchDone(batch.batch_id, [failed, ItemCancelled(second)]))
    assert h.batches() == [batch] and _queued(h) == []
    await settle()
    assert isinstance(request.future.result(), Error)
    assert h.batches() == [batch]
    assert h.metrics.registry.get_sample_value("argus_redispatched_images_total") == 0
    assert h.metrics.registry.get_sample_value("argus_queued_images") == 0


async def test_a_request_answered_past_its_deadline_as_its_batch_is_formed_is_not_sent():
    """A job of a request past its deadline is answered as a batch is formed (engine/dispatch/timing.py, still_wanted);
    the images of its request taken before it into the batch, or put aside, are not sent nor put back."""
    h = Harness(inflight_batches_per_worker=1)
    worker = h.add_worker("a", max_batch=4)
    h.request(n=1)  # keeps the worker busy: the next request queues
    (running,) = h.batches()
    late = h.request(n=3, slo_ms=500)
    assert len(_queued(h)) == 3
    h.clock.now += 1.0  # its deadline passes while it is queued, before any sweep
    h.finish(worker, running)
    assert _queued(h) == []
    assert [m for _, m in h.sent if isinstance(m, Batch)] == [running]
    assert not [m for _, m in h.sent if isinstance(m, Abort)]
    await settle()
    assert late.future.result().code == "deadline_exceeded"
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "queued"}) == 1
