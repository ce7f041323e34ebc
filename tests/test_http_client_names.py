"""Whom an HTTP request's images count against in the queue's shares: the end user a request names is never taken
for the client at an address."""

import asyncio

import aiohttp
from waiting import eventually

from engine.config import DispatchConfig
from engine.server import Engine
from engine_process import free_port, in_process_config, stop_in_process


def busy(engine: Engine, reason: str) -> float:
    return engine.metrics.registry.get_sample_value("argus_requests_total", {"outcome": "busy", "code": reason}) or 0


async def test_a_user_named_like_an_address_is_not_the_client_at_that_address(tmp_path):
    """A `user` of "127.0.0.1" was counted as the client at 127.0.0.1: refused for the share that client held (and
    its images held that client's share in turn). No workers: the images admitted wait, holding their room."""
    port = free_port()
    engine = Engine(in_process_config(tmp_path, port=port, dispatch=DispatchConfig(max_queue=2)))
    running = asyncio.create_task(engine.run())
    url = f"http://127.0.0.1:{port}/v1/images/generations"
    try:
        async with aiohttp.ClientSession() as session:

            async def post(**fields) -> int:
                body = {"prompt": "a kite", "size": "64x64", **fields}
                async with session.post(url, json=body) as reply:
                    return reply.status

            for _ in range(600):  # the engine is still starting
                try:
                    async with session.get(f"http://127.0.0.1:{port}/health"):
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.05)
            holder = asyncio.create_task(post(n=2))  # the client at 127.0.0.1 fills the queue
            assert await eventually(lambda: engine.dispatcher.outstanding_images == 2)
            assert await post(user="b") == 429  # another client waits for room
            assert busy(engine, "queue_full") == 1
            assert await post(user="127.0.0.1") == 429
            # a client holding nothing, refused for want of room, not for a share of the queue it does not hold
            assert (busy(engine, "queue_full"), busy(engine, "client_share")) == (2, 0)
            holder.cancel()
    finally:
        await stop_in_process(engine, running)
