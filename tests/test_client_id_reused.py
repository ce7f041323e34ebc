"""A call under the id of a request its client gave up on (a timeout, a cancelled task), the request still held by the
engine, waits for that request's reply before it sends its own, and returns its own.

It took that reply for its own: the Cancelled, or another prompt's images made before the Cancel came. And its own
request, sent while the engine still held the first, was refused as an id in flight (an Error under no id, which no
call reads), so its prompt was never run."""

import asyncio
import threading

import pytest
from scripted_engine import ScriptedEngine

from engine.client import ArgusClient, AsyncArgusClient
from protocols.client_messages import Cancel, Error

# in process, each in milliseconds: a hang is a failure, not a wait for the suite's 300 s
pytestmark = pytest.mark.timeout(60)


def _given_up_then_answered(engine: ScriptedEngine) -> list[str]:
    """As an engine does: the first request, its Cancel, its reply (made as the Cancel came), then the next request
    under its id, answered. The prompts the engine was sent."""
    identity, first = engine.receive()
    assert engine.receive()[1] == Cancel("job")
    engine.answer(identity, Error("job", "worker_error", "the fox's"))
    _, second = engine.receive()
    engine.answer(identity, Error("job", "worker_error", "the wolf's"))
    return [first.prompt, second.prompt]


def test_a_sync_call_under_the_id_of_one_timed_out_gets_its_own_reply(scripted_engine):
    with ArgusClient(scripted_engine.address, timeout_s=0.5) as client:
        with pytest.raises(TimeoutError):
            client.generate("a fox", request_id="job")
        prompts = []
        serving = threading.Thread(target=lambda: prompts.extend(_given_up_then_answered(scripted_engine)))
        serving.start()
        client._timeout_s = 30  # the next call waits for its reply, however busy the machine
        reply = client.generate("a wolf", request_id="job")
        serving.join()
    assert reply.message == "the wolf's"  # was the fox's
    assert prompts == ["a fox", "a wolf"]


async def test_an_async_call_under_the_id_of_one_cancelled_gets_its_own_reply(scripted_engine):
    async with AsyncArgusClient(scripted_engine.address) as client:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.generate("a fox", request_id="job"), 0.5)
        serving = asyncio.create_task(asyncio.to_thread(_given_up_then_answered, scripted_engine))
        reply = await asyncio.wait_for(client.generate("a wolf", request_id="job"), 30)
        assert reply.message == "the wolf's"  # was the fox's
        assert await serving == ["a fox", "a wolf"]
