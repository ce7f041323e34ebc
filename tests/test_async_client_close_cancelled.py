"""AsyncArgusClient.close() in a task cancelled as it closes the client: the client is closed, and the task ends
cancelled."""

import asyncio

import pytest
from engine_stand_in import StandInEngine, admitted, zmq_door_of

from engine.client import AsyncArgusClient, ClientClosed


async def test_a_task_cancelled_as_it_closes_the_async_client_ends_cancelled_with_the_client_closed():
    """close() swallowed the CancelledError with the reply reader's, which it cancels and waits for: the task ran on
    past its close() as if never cancelled (a wait_for(close(), ...) that timed out returned, asyncio.run's shutdown
    waited on a task it had cancelled)."""
    engine = StandInEngine()
    async with zmq_door_of(engine) as door:
        client = AsyncArgusClient(door.address)
        call = asyncio.create_task(client.generate("a heron", request_id="in-flight"))
        await admitted(engine)
        closing = asyncio.create_task(client.close())
        await asyncio.sleep(0)  # it waits for the reply reader to end
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert client._socket.closed
        with pytest.raises(ClientClosed):
            await call
