"""An answered request is freed as soon as nothing holds it: no reference cycle waits for the garbage collector.

A request and its jobs point at each other. Left so, every answered request (its latents, and its reply's
images) stayed in memory until a full collection: under a steady 100 req/s with 8 simulated workers, up to
703 answered requests were alive beside about 50 in flight.
"""

import asyncio
import gc

from waiting import eventually

from engine.client import AsyncArgusClient
from engine.config import LaunchConfig
from engine.dispatch.jobs import AdmittedRequest, Job
from engine.http.readiness import readiness
from engine.server import Engine
from engine_process import in_process_config
from protocols.client_messages import Error, Images


def _alive(kind: type, besides: list) -> int:
    """How many `kind` objects are alive, but those in `besides` (held there: their ids are not reused). By their
    type, not isinstance: isinstance over every object of a test process that has imported torch, diffusers and openai
    took 2.5 to 3.9 s a pass (0.2 s so), each pass holding up the engine that runs in the same event loop."""
    held = {id(thing) for thing in besides}
    return sum(issubclass(type(thing), kind) and id(thing) not in held for thing in gc.get_objects())


async def test_answered_requests_are_freed_without_a_collection(tmp_path):
    engine = Engine(in_process_config(tmp_path, launch=LaunchConfig(count=1, backend="sim", time_scale=0.05)))
    running = asyncio.create_task(engine.run())
    client = AsyncArgusClient(engine.clients.endpoints[0])
    try:
        assert await eventually(lambda: readiness(engine)["ready"], timeout_s=60)
        gc.collect()
        gc.disable()  # only reference counting frees anything from here
        # other tests' in this process, kept by aiohttp's cache of apps (an engine stood in for its HTTP door holds
        # those it admitted)
        earlier = [thing for thing in gc.get_objects() if issubclass(type(thing), (AdmittedRequest, Job))]
        made = [client.generate(f"a fox, take {i % 3}", width=64, height=64, n=2) for i in range(12)]
        # each a few milliseconds against images of tens: answered deadline_exceeded, some while they run
        late = [client.generate("a hurried fox", width=64, height=64, slo_ms=5) for _ in range(4)]
        replies = await asyncio.gather(*made, *late)
        assert all(isinstance(reply, Images) for reply in replies[:12])
        assert all(isinstance(reply, Error) for reply in replies[12:])
        del replies
        # a job aborted while it ran keeps its request until the worker answers the batch
        assert await eventually(lambda: _alive(AdmittedRequest, earlier) == 0, timeout_s=30)
        assert _alive(Job, earlier) == 0
    finally:
        gc.enable()
        await client.close()
        engine.request_stop()
        await asyncio.wait_for(running, 30)
