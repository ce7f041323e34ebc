"""AsyncArgusClient.close() as other tasks go on: one cancelled as it closes the client ends cancelled, the client
closed; a call made meanwhile sends nothing."""

import asyncio

import pytest
from engine_stand_in import StandInEngine, admitted, zmq_door_of
from scripted_engine import ScriptedEngine
from waiting import eventually

from engine.client import AsyncArgusClient, ClientClosed


async def test_a_task_cancelled_as_it_closes_the_async_client_ends_cancelled_with_the_client_closed():
    """close() swallowed the CancelledError with the reply reader's, which it cancels and waits for: the task ran on
    past its close() as if never cancelled (a wait_for(close(), ...) that timed out returned, asyncio.run's shutdown
    waited on a task it had cancelled)."""
    engine = StandInEngine()
    async with zmq_door_of(engine) as door:
        client, call, closing = await _closing_with_a_call_in_flight(engine, door.address)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert client._socket.closed
        with pytest.raises(ClientClosed):
            await call


async def test_a_call_made_as_the_async_client_closes_sends_nothing():
    """close() tells the engine to stop the requests in flight, then waits for its reply reader to end: a call made
    meanwhile sent its request, never cancelled, and the engine ran it for no one (the call raised ClientClosed)."""
    engine = StandInEngine()
    async with zmq_door_of(engine) as door:
        client, first, closing = await _closing_with_a_call_in_flight(engine, door.address)
        with pytest.raises(ClientClosed):
            await client.generate("a wolf", request_id="late")
        await closing
        with pytest.raises(ClientClosed):
            await first
        # what the door read of the client, up to its close: each request it admitted, it was told to cancel
        assert await eventually(lambda: len(engine.cancelled) == len(engine.admitted), timeout_s=10)
        assert [request.spec.request_id for request in engine.admitted] == ["first"]


async def test_closing_with_no_engine_to_take_what_is_queued_holds_up_no_other_task():
    """close() waited in the loop for its context's term(), which waits out the sockets' linger (half a second) for
    what is queued to go, the whole of it with no engine at the address: every other task of the loop stood still.
    Here the call's Cancel, its request sent to an engine gone since."""
    engine = ScriptedEngine()
    try:
        client = AsyncArgusClient(engine.address)
        call = asyncio.create_task(client.generate("a heron"))
        await asyncio.to_thread(engine.receive)
        engine.down()
        assert await eventually(lambda: not client._refusals.connected)  # heard gone: the Cancel has nowhere to go
        closing = asyncio.create_task(client.close())
        assert await eventually(lambda: client._socket.closed)
        assert not closing.done()  # the linger is waited out in a thread: this task ran meanwhile
        await closing
        with pytest.raises(ClientClosed):
            await call
    finally:
        engine.close()


async def _closing_with_a_call_in_flight(engine: StandInEngine, address: str):
    """A client, the task of its call the engine admitted, and the task of its close(), which waits for the reply
    reader to end."""
    client = AsyncArgusClient(address)
    call = asyncio.create_task(client.generate("a heron", request_id="first"))
    await admitted(engine)
    closing = asyncio.create_task(client.close())
    await asyncio.sleep(0)
    return client, call, closing
