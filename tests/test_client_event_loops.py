"""An AsyncArgusClient serves one event loop at a time, one after another: a loop closed without ending the client's
tasks leaves no call of the next waiting for ever, and one still open is named."""

import asyncio
import gc
import logging
import os

import pytest
from engine_stand_in import StandInEngine, admitted, zmq_door_of
from waiting import eventually, wait_for

from engine.client import AsyncArgusClient, link
from engine_process import start_engine
from protocols.client_messages import Cancelled, Error, Generate, Images


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("loops"), "--time-scale", "0.02", workers=1, backend="sim")
    yield engine
    assert engine.stop() == 0


def _call(client: AsyncArgusClient, prompt: str):
    return asyncio.wait_for(client.generate(prompt, width=64, height=64), 30)


def test_a_client_serves_the_next_loop_after_one_closed_with_its_tasks_pending(engine):
    """loop.close() leaves tasks pending, where asyncio.run cancels them: the reply reader's read stayed pending in the
    closed loop and took every reply after, so each call in the next loop waited for ever, and close() raised 'Event
    loop is closed', leaving the sockets open."""
    open_before = set(os.listdir("/proc/self/fd"))
    client = AsyncArgusClient(engine.client_address)
    first = asyncio.new_event_loop()
    assert isinstance(first.run_until_complete(_call(client, "a fox")), Images)
    first.close()
    _served_then_closed_in_a_new_loop(client)
    assert set(os.listdir("/proc/self/fd")) == open_before


def _served_then_closed_in_a_new_loop(client: AsyncArgusClient) -> None:
    second = asyncio.new_event_loop()
    try:
        assert isinstance(second.run_until_complete(_call(client, "a wolf")), Images)
        second.run_until_complete(client.close())
    finally:
        second.close()


def _left_waiting_in_a_closed_loop(client: AsyncArgusClient, engine, request_id: str | None = None) -> None:
    """A call sent, then its loop closed before the reply came (the engine answers it all the same), of seed 3."""
    answered = engine.metric("argus_requests_total", outcome="ok", code="")
    first = asyncio.new_event_loop()
    first.create_task(client.generate("left waiting", request_id=request_id, width=64, height=64, seed=3))
    # until it is sent (once the client has heard it is connected)
    assert first.run_until_complete(eventually(lambda: client._sent))
    first.close()
    # at least: a reply of an earlier test's that the engine counts after `answered` was read would have made == wait
    # its 30 s and fail (as one CI run did here, cause not seen)
    assert wait_for(lambda: engine.metric("argus_requests_total", outcome="ok", code="") >= answered + 1)


def test_a_call_left_waiting_in_a_closed_loop_leaves_the_next_loop_served(engine):
    """That call never returns. Its reply (or request_lost, once connected again: it was asked after at each
    connection), read in the next loop, was handed to the closed loop's future: 'Event loop is closed' ended the
    reader, and every call after waited for ever."""
    client = AsyncArgusClient(engine.client_address)
    _left_waiting_in_a_closed_loop(client, engine)
    _served_then_closed_in_a_new_loop(client)


def test_the_id_of_a_call_left_waiting_in_a_closed_loop_may_be_used_again(engine):
    """That call will never return: its id was refused as 'already in flight on this client' all the same. Its reply,
    read in the next loop, is not the answer of the call made there under its id: it was (seed 3, another prompt's
    image), and that call's own reply was dropped."""
    client = AsyncArgusClient(engine.client_address)
    _left_waiting_in_a_closed_loop(client, engine, request_id="asked-again")

    async def again():
        try:
            call = client.generate("a wolf", request_id="asked-again", width=64, height=64, seed=7)
            return await asyncio.wait_for(call, 30)
        finally:
            await client.close()

    reply = asyncio.run(again())
    assert isinstance(reply, Images) and reply.request_id == "asked-again"
    assert reply.images[0].seed == 7


def test_a_client_with_a_call_left_waiting_in_a_closed_loop_closes(engine):
    """close() failed that call's future too: it raised 'Event loop is closed', and left the sockets open."""
    open_before = set(os.listdir("/proc/self/fd"))
    client = AsyncArgusClient(engine.client_address)
    _left_waiting_in_a_closed_loop(client, engine)
    asyncio.run(client.close())
    assert set(os.listdir("/proc/self/fd")) == open_before


def test_a_client_whose_replies_another_open_loop_reads_says_so(engine):
    """Replies would go to the reader in the other loop, and the call wait for ever."""
    client = AsyncArgusClient(engine.client_address)
    first = asyncio.new_event_loop()
    try:
        assert isinstance(first.run_until_complete(_call(client, "a fox")), Images)
        with pytest.raises(RuntimeError, match="reads its replies in another event loop, still open"):
            asyncio.run(_call(client, "a wolf"))
        first.run_until_complete(client.close())
    finally:
        first.close()


async def test_a_call_under_the_id_of_one_left_waiting_in_a_closed_loop_waits_for_that_ones_reply():
    """The request left waiting is still held when the next loop's call under its id is made: the engine refused that
    call's request (an id in flight, answered under none), and the held one's reply answered the call. It is
    cancelled now, and the call sends its request once the held one's reply is read."""
    engine = StandInEngine()
    async with zmq_door_of(engine) as door:
        client = AsyncArgusClient(door.address)

        def left_waiting() -> None:
            first = asyncio.new_event_loop()
            first.create_task(client.generate("left waiting", request_id="held"))
            assert first.run_until_complete(eventually(lambda: client._sent))
            first.close()

        async def again() -> object:
            try:
                return await asyncio.wait_for(client.generate("a wolf", request_id="held"), 30)
            finally:
                await client.close()

        await asyncio.to_thread(left_waiting)
        held = await admitted(engine)
        call = asyncio.create_task(asyncio.to_thread(asyncio.run, again()))
        assert await eventually(lambda: engine.cancelled == [held], timeout_s=10)
        # the call left waiting, unreachable with its closed loop, is closed by the collector (when, a run's garbage
        # decides): it took the next call's wait for its reply out, and that call waited for ever (the file alone)
        gc.collect()
        held.future.set_result(Cancelled("held"))
        (await admitted(engine, before=1)).future.set_result(Error("held", "worker_error", "the wolf's"))
        assert await call == Error("held", "worker_error", "the wolf's")


async def test_the_id_of_a_call_answered_as_its_loop_closed_is_used_again_at_once():
    """Its reply was read, and the loop closed before the call took it: no reply is to come for that request, and a call
    under its id in the next loop waiting for one would wait for ever."""
    engine = StandInEngine()
    async with zmq_door_of(engine) as door:
        client = AsyncArgusClient(door.address)
        first = asyncio.new_event_loop()
        take_reply = client._take_reply

        def reply_taken_then_stopped(frames) -> None:
            take_reply(frames)
            first.stop()  # before the call's task, woken by its reply, runs again

        def answered_as_closed() -> asyncio.Task:
            client._take_reply = reply_taken_then_stopped
            task = first.create_task(client.generate("answered", request_id="read"))
            first.run_forever()
            first.close()
            del client._take_reply
            return task  # held, as a pipeline holds its tasks: the call never ends

        async def again() -> object:
            try:
                return await asyncio.wait_for(client.generate("a wolf", request_id="read"), 10)
            finally:
                await client.close()

        closed = asyncio.create_task(asyncio.to_thread(answered_as_closed))
        (await admitted(engine)).future.set_result(Error("read", "worker_error", "the answer's"))
        left = await closed
        call = asyncio.create_task(asyncio.to_thread(asyncio.run, again()))
        (await admitted(engine, before=1)).future.set_result(Error("read", "worker_error", "the wolf's"))
        assert await call == Error("read", "worker_error", "the wolf's")
        assert not left.done()


def test_a_call_made_in_the_next_loop_as_the_engine_is_down_goes_once_it_is_back(scripted_engine, monkeypatch, caplog):
    """The connection watcher's wait, left in the loop closed under it, was still first in line for the monitor's next
    event: the engine's coming back went to it, in vain ('Event loop is closed' logged by the next loop), and the
    watcher waiting in the next loop never heard it. A call made there as the engine was down sent its request at its
    unanswered warning (10 s; here ten minutes), or never, with the engine back after those."""
    monkeypatch.setattr(link, "UNANSWERED_WARNING_S", 600.0)
    client = AsyncArgusClient(scripted_engine.address)
    first = asyncio.new_event_loop()
    first.create_task(client.generate("left waiting", request_id="left"))
    assert first.run_until_complete(eventually(lambda: client._sent))
    first.close()
    scripted_engine.down()
    assert wait_for(lambda: client._refusals.reason() is None and not client._refusals.connected)

    def request_of(request_id: str) -> bytes:
        """The identity that sent the request `request_id` (what else the client sends meanwhile skipped)."""
        while True:
            identity, message = scripted_engine.receive()
            if isinstance(message, Generate) and message.request_id == request_id:
                return identity

    async def made_as_the_engine_is_down() -> object:
        try:
            call = asyncio.create_task(client.generate("a wolf", request_id="wolf"))
            assert await eventually(lambda: client._connecting)  # waits for a connection, its watcher with it
            await asyncio.to_thread(scripted_engine.up)
            identity = await asyncio.to_thread(request_of, "wolf")
            scripted_engine.answer(identity, Error("wolf", "worker_error", "the wolf's"))
            return await asyncio.wait_for(call, 30)
        finally:
            await client.close()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        assert asyncio.run(made_as_the_engine_is_down()) == Error("wolf", "worker_error", "the wolf's")
    assert "Event loop is closed" not in caplog.text
