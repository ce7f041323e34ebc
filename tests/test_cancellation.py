"""A client that goes away (HTTP) or cancels (ZeroMQ) aborts its request, queued or running."""

import asyncio
import json
import time

import pytest

from engine.client import AsyncArgusClient
from engine_process import start_engine


@pytest.fixture
def engine(tmp_path):
    # one sim worker taking about 5 s an image, one image at a time: a second request queues
    engine = start_engine(tmp_path, "--time-scale", "1", "--max-batch", "1", workers=1, backend="sim")
    yield engine
    assert engine.stop() == 0


def wait_idle(engine, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(w["load"] == 0 for w in engine.ready()["workers"]):
            return True
        time.sleep(0.1)
    return False


async def post_then_hang_up(engine, after_s: float) -> None:
    host, port = engine.http.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps({"prompt": "a slow one", "size": "64x64"}).encode()
    writer.write(
        b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await asyncio.sleep(after_s)
    writer.close()
    await writer.wait_closed()


def test_http_client_disconnect_aborts_running_and_queued_requests(engine):
    async def scenario():
        await asyncio.gather(post_then_hang_up(engine, 1.0), post_then_hang_up(engine, 1.0))

    asyncio.run(asyncio.wait_for(scenario(), 30))
    # both were aborted long before the ~10 s two images would take
    assert wait_idle(engine, timeout_s=3.0)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and engine.metric("argus_requests_total", outcome="cancelled", code="") < 2:
        time.sleep(0.1)
    assert engine.metric("argus_requests_total", outcome="cancelled", code="") == 2
    assert engine.metric("argus_images_total", level="0") == 0


def test_zmq_cancel_aborts_the_running_request(engine):
    async def scenario():
        async with AsyncArgusClient(engine.client_address) as client:
            task = asyncio.create_task(client.generate("a slow one", width=64, height=64))
            await asyncio.sleep(1.0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the worker is free again at once: the next request is served in about one image's time
            return await asyncio.wait_for(client.generate("next", width=64, height=64), 30)

    reply = asyncio.run(scenario())
    assert reply.images[0].level == 0
    assert engine.metric("argus_requests_total", outcome="cancelled", code="") == 1
    assert engine.metric("argus_images_total", level="0") == 1
