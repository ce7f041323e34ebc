"""Latents a worker hands back that cannot be a run's at the request's size (wrong shape, dtype or levels, or not
finite) are not cached: before, one remote worker of another build had its latents cached and served as the
starting latent of every similar prompt after, each failing at the worker that got it (or made garbage)."""

import contextlib

import msgspec
import numpy as np
import pytest
import zmq
from dispatcher_harness import Harness, settle
from pictures import image_as_asked
from test_chaos import FakeWorker, ask_in_background
from waiting import wait_for

from engine.fleet.link import WorkerLink
from engine_process import start_engine
from protocols.client_messages import Error, Images
from protocols.worker_messages import BatchDone, ItemDone, worker_side_codec

LEVELS = [5, 10, 15, 20, 25]


def latents(width: int, height: int, **changes) -> tuple[list[int], np.ndarray]:
    """What a full run at this size passes through, with `changes` made to it."""
    levels = changes.get("levels", LEVELS)
    count = changes.get("count", len(levels))
    shape = changes.get("shape", (4, height // 8, width // 8))
    stacked = np.zeros((count, *shape), changes.get("dtype", np.float16))
    if changes.get("nan"):
        stacked[-1, 0, 0, 0] = np.nan
    return levels, stacked


# each case in a size of its own: the cache keeps latents by shape, so no case finds another's prompt
BAD = {
    "shape": (72, dict(shape=(4, 4, 4))),  # half the side: another VAE, or a bug
    "channels": (80, dict(shape=(9, 10, 10))),
    "dtype": (88, dict(dtype=np.uint8)),  # the wire carries uint8 (images); float64 does not decode at all
    "nan": (96, dict(nan=True)),
    "count": (104, dict(count=3)),  # five levels named, three latents sent
    "unknown-level": (112, dict(levels=[5, 10, 15, 20, 30])),
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # nirvana: the level comes from the similarity alone, so an identical prompt resumes at once
    with engine_with_a_raw_worker(tmp_path_factory.mktemp("latents"), "--policy", "nirvana", levels=LEVELS) as joined:
        yield joined


@contextlib.contextmanager
def engine_with_a_raw_worker(tmp_path, *args: str, **hello):
    """An engine serving `tiny` with no workers of its own, and one raw worker joined to it, whose hello says
    `hello`: the test speaks for it, message by message."""
    engine = start_engine(tmp_path, *args, workers=0, wait=False)
    worker = FakeWorker(engine.worker_address)
    try:
        worker.hello = msgspec.structs.replace(
            worker.hello, backend="tiny", model="tiny:0123456789abcdef", device="cpu", simulated=False,
            min_size=64, max_size=256, **hello,
        )  # fmt: skip
        worker.handshake(timeout_s=60)
        yield engine, worker
    finally:
        worker.close()
        assert engine.stop() == 0


def serve(engine, worker, prompt: str, size: int, answer) -> tuple[Images, object]:
    """One request for `prompt` at size x size, its batch answered by `answer(batch)`: the reply and the batch."""
    replies = []
    asker = ask_in_background(engine.client_address, replies, prompt, timeout_s=60, size=size)
    batch = worker.next_batch(timeout_s=30)
    assert batch is not None, engine.log()
    worker.send(BatchDone(batch.batch_id, answer(batch)))
    asker.join(60)
    (reply,) = replies
    return reply, batch


def run_with(levels_and_latents=([], None)):
    """Answers a batch with its images, each bringing these latents (none by default)."""

    def answer(batch):
        levels, stacked = levels_and_latents
        return [ItemDone(item.request_id, image_as_asked(batch), 0, levels, stacked, 1.0, 50) for item in batch.items]

    return answer


@pytest.mark.parametrize("case", list(BAD))
def test_a_latent_that_does_not_fit_is_not_cached_and_its_image_is_served(engine, case):
    engine, worker = engine
    size, changes = BAD[case]
    prompt = f"a lighthouse at dusk, case {case}"
    first, _ = serve(engine, worker, prompt, size, run_with(latents(size, size, **changes)))
    assert isinstance(first, Images), first  # the image was fine: the client has it
    again, batch = serve(engine, worker, prompt, size, run_with())
    assert isinstance(again, Images), again
    (item,) = batch.items
    assert (batch.level, item.latent) == (0, None), f"served from a bad latent: level {batch.level}"
    assert_warned_once(engine, f"({size}x{size}, from step 0 of 50)")


def assert_warned_once(engine, about: str) -> None:
    (worker,) = engine.ready()["workers"]

    def warnings() -> list[str]:
        return [line for line in engine.log().splitlines() if "WARNING" in line and about in line]

    # what an image brings is checked on the cache thread after its reply, with the next lookups at the latest
    assert wait_for(warnings, timeout_s=60), engine.log()[-2000:]
    assert len(warnings()) == 1 and f"worker {worker['name']} " in warnings()[0], warnings()


def test_latents_that_fit_are_cached_and_resumed_from(engine):
    """The check lets a good run's latents through: a similar prompt resumes from them."""
    engine, worker = engine
    size = 120
    first, _ = serve(engine, worker, "a lighthouse at dusk, fitting", size, run_with(latents(size, size)))
    assert isinstance(first, Images), first
    # a near-duplicate: it resumes from one of the first prompt's levels
    again, batch = serve(engine, worker, "a lighthouse at dusk, fitting!", size, run_with(latents(size, size)))
    assert isinstance(again, Images), again
    (item,) = batch.items
    assert batch.level > 0 and item.latent.shape == (4, size // 8, size // 8)
    # and said it passed through levels 5 to 25, some of which a run from that level never sees: not cached
    assert_warned_once(engine, f"({size}x{size}, from step {batch.level} of 50)")


async def test_an_answer_whose_latents_do_not_decode_fails_its_images_at_once_saying_why(tmp_path, caplog):
    """A latent of a dtype the wire does not carry (float64) fails the whole message's decoding. Dropped, with a DEBUG
    line, its batch's images waited out the heartbeat timeout (10 s), were said lost on the link, and were sent again:
    to the worker that answered so again, three times, and then failed naming no cause."""
    h = Harness()
    link = WorkerLink(
        zmq.Context.instance(), [f"ipc://{tmp_path}/workers"], h.registry, h.metrics, 1.0, 10.0, backend="sim"
    )
    link.bind_dispatcher(h.dispatcher)
    try:
        h.add_worker("w")
        request = h.request()
        (batch,) = h.batches()
        answer = BatchDone(batch.batch_id, run_with(latents(batch.width, batch.height, dtype=np.float64))(batch))
        link._on_frames(b"w", [zmq.Frame(frame) for frame in worker_side_codec().encode(answer)])
        await settle()
    finally:
        link.close()
    assert request.done, "left to the heartbeat timeout"
    reply = request.future.result()
    assert isinstance(reply, Error) and reply.code == "worker_error" and "'float64' not allowed" in reply.message
    assert f"worker w failed batch {batch.batch_id}" in caplog.text
