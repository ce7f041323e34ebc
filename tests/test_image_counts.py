"""argus_images_total counts the images delivered: not one a worker made for a request already answered earlier in the
same batch's answer, or in the same loop turn."""

from dispatcher_harness import Harness, settle
from pictures import image_as_asked

from protocols.client_messages import Cancelled, Error
from protocols.worker_messages import BatchDone, ItemDone, ItemFailed


def _made(batch, request_id):
    return ItemDone(request_id, image_as_asked(batch), batch.level, [], None, 1.0, 50)


def _counted(h: Harness) -> dict[str, float]:
    sample = h.metrics.registry.get_sample_value
    return {
        "images": sample("argus_images_total", {"level": "0"}) or 0,
        "queue_seconds": sample("argus_queue_seconds_count"),
        "estimated_quality": sample("argus_estimated_quality_percent_count"),
    }


async def test_an_image_after_its_requests_failure_in_the_same_batch_is_not_counted():
    h = Harness()
    worker = h.add_worker("a")
    request = h.request(n=2)
    (batch,) = h.batches()
    first, second = (item.request_id for item in batch.items)
    h.dispatcher.batch_done(
        worker, BatchDone(batch.batch_id, [ItemFailed(first, "oom", "out of memory"), _made(batch, second)])
    )
    await settle()
    assert isinstance(request.future.result(), Error)
    assert _counted(h) == {"images": 0, "queue_seconds": 0, "estimated_quality": 0}


async def test_an_image_read_in_the_turn_its_request_was_cancelled_is_not_counted():
    h = Harness()
    worker = h.add_worker("a")
    request = h.request()
    (batch,) = h.batches()
    h.dispatcher.cancel(request)  # the client's Cancel, read before the worker's answer in one loop turn
    h.dispatcher.batch_done(worker, BatchDone(batch.batch_id, [_made(batch, batch.items[0].request_id)]))
    await settle()
    assert isinstance(request.future.result(), Cancelled)
    assert _counted(h) == {"images": 0, "queue_seconds": 0, "estimated_quality": 0}
    assert h.metrics.registry.get_sample_value("argus_queued_images") == 0
