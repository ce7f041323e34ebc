"""An image a worker answers that is not the one its batch asked for (another size, another format, or bytes that are
no image) fails with worker_error, naming what came: before, the client got it as its image (a 32x32 PNG for the
64x64 it asked, a JPEG for a PNG, b"img"). A worker of another build or model folder, or a buggy backend, may answer
anything; the engine reads each image's header, never its pixels."""

import re
import threading

import pytest
from pictures import blank_image, image_as_asked
from test_worker_latents import engine_with_a_raw_worker
from waiting import wait_for

from engine.client import ArgusClient
from protocols.client_messages import Error, Images
from protocols.codec import Blob
from protocols.worker_messages import BatchDone, ItemDone

# what the worker answers for a 64x64 png (as raw bytes, or a (width, height, format) it encodes), and what the
# client's error then says came
WRONG = {
    "smaller": ((32, 32, "png"), "a 32x32 png"),
    "one side": ((64, 72, "png"), "a 64x72 png"),
    "sides swapped": ((72, 64, "png"), "a 72x64 png"),
    "jpeg": ((64, 64, "jpeg"), "a 64x64 jpeg"),
    "webp": ((64, 64, "webp"), "a 64x64 webp"),
    "no image": (b"img", "bytes that are no png, jpeg or webp"),
    "cut short": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "bytes that are no png, jpeg or webp"),
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with engine_with_a_raw_worker(tmp_path_factory.mktemp("images"), max_batch=4) as joined:
        yield joined


def serve(engine, worker, answer, n: int = 1, **fields):
    """One request, its batch answered by `answer(batch)`: the client's reply."""
    replies = []

    def ask() -> None:
        with ArgusClient(engine.client_address, timeout_s=60) as client:
            replies.append(client.generate("a lighthouse at dusk", n=n, **{"width": 64, "height": 64, **fields}))

    asker = threading.Thread(target=ask)
    asker.start()
    batch = worker.next_batch(timeout_s=30)
    assert batch is not None, engine.log()
    assert len(batch.items) == n, "the request's images came in batches of their own"
    worker.send(BatchDone(batch.batch_id, answer(batch)))
    asker.join(60)
    (reply,) = replies
    return reply


def done(item, image: bytes) -> ItemDone:
    return ItemDone(item.request_id, Blob(image), 0, [], None, 1.0, 50)


def made(image: bytes | tuple[int, int, str]) -> bytes:
    return image if isinstance(image, bytes) else blank_image(*image)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", list(WRONG))
def test_an_image_not_as_asked_fails_with_worker_error_naming_what_came(engine, case):
    engine, worker = engine
    image, came = WRONG[case]
    bad_before = engine.metric("argus_bad_messages_total", link="worker")
    reply = serve(engine, worker, lambda batch: [done(item, made(image)) for item in batch.items])
    assert isinstance(reply, Error), f"served {reply!r:.200}"
    (name,) = [w["name"] for w in engine.ready()["workers"]]
    assert reply.code == "worker_error"
    assert reply.message == f"worker {name} answered {came} where a 64x64 png was asked"
    assert engine.metric("argus_bad_messages_total", link="worker") == bad_before + 1


@pytest.mark.timeout(180)
def test_a_batch_of_images_not_as_asked_gets_one_warning_naming_the_worker_the_request_and_what_came(tmp_path):
    """An engine of its own: a worker's failed batches after its first are said at most once every 10 s
    (engine/logs/failed_batch_lines.py), so the module's engine, whose worker failed batches just before, may say
    none."""
    with engine_with_a_raw_worker(tmp_path, max_batch=4) as (engine, worker):
        reply = serve(engine, worker, lambda batch: [done(item, b"img") for item in batch.items], n=3)
        assert isinstance(reply, Error) and reply.code == "worker_error", reply
        (name,) = [w["name"] for w in engine.ready()["workers"]]
        said = f" (3 images, request {reply.request_id!r}): worker {name} answered bytes that are no png"
        # written by the engine's log thread (engine/logs/thread.py): it may follow the reply
        line = rf"worker {re.escape(name)} failed batch \d+{re.escape(said)}"
        assert wait_for(lambda: re.search(line, engine.log())), engine.log()
        assert engine.log().count("failed batch") == 1


@pytest.mark.timeout(180)
def test_one_image_not_as_asked_fails_its_request(engine):
    """The other images fine, one not: the request has no image for it, and fails."""
    engine, worker = engine
    reply = serve(engine, worker, lambda batch: [done(batch.items[0], b"img")] + [
        done(item, image_as_asked(batch)) for item in batch.items[1:]
    ], n=2)  # fmt: skip
    assert isinstance(reply, Error) and reply.code == "worker_error", reply


@pytest.mark.timeout(180)
@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_images_as_asked_are_served(engine, output_format):
    """The check lets through what a worker makes: every format, a size whose sides differ."""
    engine, worker = engine
    reply = serve(
        engine,
        worker,
        lambda batch: [done(item, image_as_asked(batch)) for item in batch.items],
        width=136,
        height=64,
        output_format=output_format,
    )
    assert isinstance(reply, Images), reply
    assert reply.images[0].image == blank_image(136, 64, output_format)


@pytest.mark.timeout(180)
def test_images_left_out_are_sent_again_and_answers_beyond_the_batch_are_ignored(engine):
    """The wrong number of answers: none is served twice, and none goes missing."""
    engine, worker = engine
    replies = []

    def ask() -> None:
        with ArgusClient(engine.client_address, timeout_s=60) as client:
            replies.append(client.generate("a lighthouse at dusk", n=2, width=64, height=64))

    asker = threading.Thread(target=ask)
    asker.start()
    first = worker.next_batch(timeout_s=30)
    kept, left_out = first.items
    image = image_as_asked(first)
    # one image twice, one the batch never held, and one left out
    strays = [done(kept, image), done(kept, b"img"), ItemDone("j-not-sent", Blob(b"img"), 0, [], None, 1.0, 50)]
    worker.send(BatchDone(first.batch_id, strays))
    again = worker.next_batch(timeout_s=30)
    assert again is not None and [item.request_id for item in again.items] == [left_out.request_id]
    worker.send(BatchDone(again.batch_id, [done(left_out, image)]))
    asker.join(60)
    (reply,) = replies
    assert isinstance(reply, Images) and len(reply.images) == 2, reply
