"""While no engine is connected, a client queues nothing: a call waits to send its request until one is, so a call given
up on meanwhile (its timeout_s, a cancelled task) sends nothing. A DEALER queues what is sent with no peer, for the next
connection, up to its high-water mark: calls that timed out while the engine was down left their requests and Cancels
queued (an async client, 50,000 calls and 32 MB), and the engine that came back got each, before any new call's."""

import asyncio
import threading

import pytest
import zmq
from waiting import eventually, wait_for

from engine.client import ArgusClient, AsyncArgusClient, EngineUnreachable
from protocols.client_messages import Error, Generate

# in process: a hang is a failure, not a wait for the suite's 300 s
pytestmark = pytest.mark.timeout(60)

_GIVEN_UP = 20


@pytest.fixture(autouse=True)
def _no_engine_at_first(scripted_engine):
    """Each test starts with no engine on the address: scripted_engine.up() brings one."""
    scripted_engine.down()


def _is_the_call_now(message) -> bool:
    return isinstance(message, Generate) and message.request_id == "now"


def _the_next_sync_call_is_the_first_the_engine_gets(scripted_engine, client: ArgusClient) -> None:
    client._timeout_s = 30  # the call waits for its reply, however busy the machine
    replies = []
    caller = threading.Thread(target=lambda: replies.append(client.generate("a wolf", request_id="now")))
    caller.start()
    identity, first = scripted_engine.receive()
    scripted_engine.answer(identity, Error(first.request_id, "invalid_size", "answered"))
    caller.join()
    assert _is_the_call_now(first), first
    assert replies[0].message == "answered"


async def test_async_calls_given_up_while_no_engine_is_up_leave_nothing_queued_for_the_next(scripted_engine):
    async with AsyncArgusClient(scripted_engine.address, timeout_s=0.2) as client:
        calls = (client.generate("a fox", request_id=f"given-up-{i}") for i in range(_GIVEN_UP))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert {type(outcome) for outcome in outcomes} == {EngineUnreachable}
        with pytest.raises(TimeoutError):  # a task cancelled too
            await asyncio.wait_for(client.generate("a fox", request_id="cancelled"), 0.2)
        assert not client._orphaned  # was every one of them: sent, their replies owed
        scripted_engine.up()
        client._timeout_s = 30  # the next call waits for its reply, however busy the machine
        call = asyncio.create_task(client.generate("a wolf", request_id="now"))
        identity, first = await asyncio.to_thread(scripted_engine.receive)
        # was given-up-0, then the others and their Cancels
        assert _is_the_call_now(first), first
        scripted_engine.answer(identity, Error("now", "invalid_size", "answered"))
        assert (await asyncio.wait_for(call, 10)).message == "answered"


def test_sync_calls_timed_out_while_no_engine_is_up_leave_nothing_queued_for_the_next(scripted_engine):
    with ArgusClient(scripted_engine.address, timeout_s=0.2) as client:
        for i in range(3):
            with pytest.raises(EngineUnreachable):
                client.generate("a fox", request_id=f"given-up-{i}")
        scripted_engine.up()
        _the_next_sync_call_is_the_first_the_engine_gets(scripted_engine, client)  # was given-up-0, its Cancel, ...


async def test_both_clients_timed_out_waiting_for_an_engine_to_send_to_say_so_alike(scripted_engine):
    scripted_engine.up()
    async with AsyncArgusClient(scripted_engine.address, timeout_s=0.5) as pipelined:
        answered = asyncio.create_task(pipelined.generate("a fox", request_id="answered"))
        identity, _ = await asyncio.to_thread(scripted_engine.receive)
        scripted_engine.answer(identity, Error("answered", "invalid_size", "answered"))
        await asyncio.wait_for(answered, 10)  # an engine reached: a plain TimeoutError after, not EngineUnreachable
        with ArgusClient(scripted_engine.address, timeout_s=0.5) as blocking:

            def call_blocking() -> None:
                blocking.generate("a fox", request_id="answered")

            thread = asyncio.create_task(asyncio.to_thread(call_blocking))
            identity, _ = await asyncio.to_thread(scripted_engine.receive)
            scripted_engine.answer(identity, Error("answered", "invalid_size", "answered"))
            await thread
            scripted_engine.down()
            # each client heard its connection end (a call made before still goes, into a connection that is going)
            assert await eventually(lambda: not pipelined._refusals.connected)
            assert wait_for(lambda: blocking._refusals.reason() is None and not blocking._refusals.connected)
            with pytest.raises(TimeoutError) as pipelined_out:
                await pipelined.generate("a wolf", request_id="unsent")
            with pytest.raises(TimeoutError) as blocking_out:
                await asyncio.to_thread(blocking.generate, "a wolf", request_id="unsent")
    # the async call said 'no reply for unsent', as if the engine had it
    assert str(pipelined_out.value) == str(blocking_out.value) == "could not reach the engine to send unsent"
    assert type(pipelined_out.value) is type(blocking_out.value) is TimeoutError


def test_a_sync_call_made_after_its_engine_went_down_unheard_sends_nothing(scripted_engine):
    """The connection's end heard by the call itself (an idle client: none read the monitor since): the poll that
    found the socket ready to send read it too, and the call sent all the same, into the queue for the next engine."""
    scripted_engine.up()
    with ArgusClient(scripted_engine.address, timeout_s=0.5) as client:
        caller = threading.Thread(target=lambda: client.generate("a fox", request_id="answered"))
        caller.start()
        identity, _ = scripted_engine.receive()
        scripted_engine.answer(identity, Error("answered", "invalid_size", "answered"))
        caller.join()
        scripted_engine.down()
        # the end of the connection told, and not read: as for a client idle since its last call
        assert client._refusals.monitor.poll(10_000)
        assert client._refusals.connected
        with pytest.raises(TimeoutError, match="^could not reach the engine to send unsent$"):
            client.generate("a wolf", request_id="unsent")
        scripted_engine.up()
        _the_next_sync_call_is_the_first_the_engine_gets(scripted_engine, client)  # was unsent, then its Cancel


def test_an_async_call_made_in_a_new_loop_after_its_engine_went_down_unheard_sends_nothing(scripted_engine):
    """As for ArgusClient: the watcher that would have heard the connection end ran in an event loop since ended."""
    scripted_engine.up()
    client = AsyncArgusClient(scripted_engine.address, timeout_s=0.5)

    async def answered() -> None:
        call = asyncio.create_task(client.generate("a fox", request_id="answered"))
        identity, _ = await asyncio.to_thread(scripted_engine.receive)
        scripted_engine.answer(identity, Error("answered", "invalid_size", "answered"))
        await call

    asyncio.run(answered())
    scripted_engine.down()
    assert zmq.Socket.shadow(client._refusals.monitor.underlying).poll(10_000)  # told, and not read
    assert client._refusals.connected

    async def unsent() -> None:
        try:
            with pytest.raises(TimeoutError, match="^could not reach the engine to send unsent$"):
                await client.generate("a wolf", request_id="unsent")
        finally:
            await client.close()

    asyncio.run(unsent())


async def test_async_calls_made_while_no_engine_is_up_go_in_the_order_they_were_made(scripted_engine):
    """They waited for the connection in a set, and went in its order: a pipeline's requests were shuffled, the engine
    serving its last before its first."""
    ids = [f"call-{i}" for i in range(20)]
    async with AsyncArgusClient(scripted_engine.address, timeout_s=30) as client:
        calls = [asyncio.create_task(client.generate("a fox", request_id=request_id)) for request_id in ids]
        assert await eventually(lambda: len(client._connecting) == len(ids))
        scripted_engine.up()
        received = []
        for _ in ids:
            identity, message = await asyncio.to_thread(scripted_engine.receive)
            received.append(message.request_id)
            scripted_engine.answer(identity, Error(message.request_id, "invalid_size", "answered"))
        await asyncio.gather(*calls)
    assert received == ids
