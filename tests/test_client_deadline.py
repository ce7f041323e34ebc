"""A request's slo_ms is counted from the call, as its timeout_s is: what the call waited before its request could go
(for the reply to one given up on under its id, for another thread's call, for an engine to take it) is taken off the
slo_ms sent, so the engine does not deem on time a request that is not."""

import asyncio
import threading
import time

import pytest
from waiting import eventually, wait_for

from engine.client import ArgusClient, AsyncArgusClient
from protocols.client_messages import Cancel, Error, Generate

# in process: a hang is a failure, not a wait for the suite's 300 s
pytestmark = pytest.mark.timeout(60)

_SLO_MS = 60_000
_HELD_S = 0.5  # how long the test holds a call before its request can go


def test_a_sync_call_waiting_for_the_reply_to_one_given_up_on_sends_what_is_left_of_its_slo_ms(scripted_engine):
    with ArgusClient(scripted_engine.address, timeout_s=0.5) as client:
        identity = scripted_engine.timed_out(client, "again")
        client._timeout_s = 30  # the next call waits as long as the test holds it, however busy the machine
        sent = []

        def call() -> None:
            sent.append(client.generate("a fox", request_id="again", slo_ms=_SLO_MS))

        caller = threading.Thread(target=call)
        caller.start()
        assert wait_for(lambda: client._awaited is not None)  # the call waits for the first one's reply
        waiting_since = time.monotonic()  # the call was made before
        time.sleep(_HELD_S)
        answered_at = time.monotonic()  # its request goes after
        scripted_engine.answer(identity, Error("again", "invalid_size", "the first one's"))
        _, request = scripted_engine.receive()
        scripted_engine.answer(identity, Error("again", "invalid_size", "its own"))
        caller.join()
    assert sent[0].message == "its own"
    # was slo_ms 60000: counted from the send, the engine took the call's wait for time the request still had
    assert request.slo_ms <= _SLO_MS - 1000 * (answered_at - waiting_since), request


async def test_an_async_call_waiting_for_the_reply_to_one_given_up_on_sends_what_is_left_of_its_slo_ms(scripted_engine):
    async with AsyncArgusClient(scripted_engine.address) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.generate("a fox", request_id="again"), 0.5)
        identity, _ = await asyncio.to_thread(scripted_engine.receive)
        assert (await asyncio.to_thread(scripted_engine.receive))[1] == Cancel("again")
        call = asyncio.create_task(client.generate("a fox", request_id="again", slo_ms=_SLO_MS))
        assert await eventually(lambda: "again" in client._waiting)  # the call waits for the first one's reply
        waiting_since = time.monotonic()
        await asyncio.sleep(_HELD_S)
        answered_at = time.monotonic()
        scripted_engine.answer(identity, Error("again", "invalid_size", "the first one's"))
        _, request = await asyncio.to_thread(scripted_engine.receive)
        scripted_engine.answer(identity, Error("again", "invalid_size", "its own"))
        assert (await asyncio.wait_for(call, 10)).message == "its own"
    assert isinstance(request, Generate)
    assert request.slo_ms <= _SLO_MS - 1000 * (answered_at - waiting_since), request
