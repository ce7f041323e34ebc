"""What a worker started by hand learns from its engine's address before it loads its model."""

import asyncio
import os

from aiohttp import web

from engine_process import free_port
from protocols.worker_messages import PROTOCOL_VERSION, Probe
from workers.engine_probe import refusal_before_loading


async def test_an_http_port_is_said_to_be_one_before_the_model_loads_without_waiting_out_the_probe():
    """`--connect tcp://HOST:8000`, the engine's HTTP port: libzmq takes an HTTP server for a peer of ZeroMQ's first
    version, with no handshake, and hands on its 400 as a message. The probe took no handshake for no engine up yet
    and let the model load (minutes, for SD-XL); the hello after was then told it had been given the client
    address. The 400 comes at once, but the server keeps the connection open and libzmq says nothing more on its
    monitor: the probe then waited out its whole timeout (3 s each time) before reading the message already there.
    Given an hour here, it must answer long before the 30 s the test waits."""
    port = free_port()
    runner = web.AppRunner(web.Application())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        probe = Probe(PROTOCOL_VERSION, "gpu-0", "tiny", "", os.getpid())
        asked = asyncio.to_thread(refusal_before_loading, f"tcp://127.0.0.1:{port}", None, probe, 3600.0)
        refused = await asyncio.wait_for(asked, 30)
    finally:
        # the connection's close ends a probe still waiting (without the fix): its thread does not outlive the test
        await runner.cleanup()
    assert refused is not None and "HTTP port" in refused, refused
    assert refused.endswith("not its client one (--client-listen) nor its HTTP port (--port)"), refused
