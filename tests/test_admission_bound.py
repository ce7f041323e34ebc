"""--max-queue through a real engine: a request's images hold their room until the request is answered, not until
each is made (docs/reliability.md, Overload)."""

import asyncio

from waiting import wait_for

from engine.client.async_client import AsyncArgusClient
from engine_process import start_engine
from protocols.client_messages import Busy, Images


async def test_the_images_made_of_a_request_still_running_hold_their_room(tmp_path):
    """One worker making one image at a time, a queue of 2: a request of 2 images has made its first. Its room was
    freed image by image, so another client's image was admitted beside it, 3 images held under a bound of 2 (each
    made image is kept for the reply until the last is made: as many as --max-queue more again, in memory)."""
    # an image takes 5.1 s x 0.4: the second client asks well within the second image's run
    engine = start_engine(
        tmp_path, "--max-queue", "2", "--max-batch", "1", "--time-scale", "0.4", workers=1, backend="sim"
    )
    try:
        async with AsyncArgusClient(engine.client_address) as first, AsyncArgusClient(engine.client_address) as second:
            pair = asyncio.create_task(first.generate("a pair", n=2, width=64, height=64))
            made = lambda: engine.metric("argus_images_total", level="0") >= 1  # noqa: E731
            assert await asyncio.to_thread(wait_for, made), engine.log()
            reply = await second.generate("one more", width=64, height=64)
            pair_answered = pair.done()
            assert isinstance(reply, Busy) and reply.reason == "queue_full", reply
            assert not pair_answered, "the pair was answered before the second client was: nothing was judged"
            assert isinstance(await pair, Images)
    finally:
        engine.stop()
