"""A client connected again asks after the requests it awaits (Inquire): those the engine does not hold, sent to an
engine killed and started again on the address, or lost with the connection, are answered request_lost. Before, the
calls waited for their timeout, or for ever without one."""

import asyncio
import os
import signal

import msgspec
import pytest
import zmq
from waiting import wait_for

from engine.client import ArgusClient, AsyncArgusClient
from engine_process import raw_client, start_engine
from protocols.client_messages import Error, Generate, Images, Inquire, client_side_codec, engine_side_codec
from protocols.limits import MAX_INQUIRED_IDS

# a sim image takes about 5 s at this scale: long in flight when the engine is killed
_SLOW = ("--time-scale", "1")


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _killed_and_replaced(engine, tmp_path):
    """SIGKILL for the engine and its workers (no drain, no reply), then a new engine on the same client address."""
    os.killpg(engine.process.pid, signal.SIGKILL)
    engine.process.wait()
    return start_engine(
        tmp_path, "--time-scale", "0.01", backend="sim", workers=1, client_port=_port(engine.client_address)
    )


def _lost(reply) -> bool:
    return isinstance(reply, Error) and reply.code == "request_lost"


async def test_calls_in_flight_when_the_engine_is_killed_are_answered_by_the_engine_that_replaces_it(tmp_path):
    """A sync client's call and an async client's three, in flight together at one engine's kill: each is answered
    request_lost by its replacement (a TimeoutError after 120 s before, or a wait for ever), and each client serves
    on."""
    first = await asyncio.to_thread(start_engine, tmp_path, *_SLOW, backend="sim", workers=1)
    replaced = []

    try:
        with ArgusClient(first.client_address, timeout_s=120) as sync_client:
            async with AsyncArgusClient(first.client_address) as client:
                sync_call = asyncio.ensure_future(
                    asyncio.to_thread(sync_client.generate, "in flight", width=64, height=64)
                )
                calls = [
                    asyncio.ensure_future(client.generate(f"in flight {i}", width=64, height=64)) for i in range(3)
                ]
                assert await asyncio.to_thread(wait_for, lambda: first.metric("argus_queued_images") == 4)
                replaced.append(await asyncio.to_thread(_killed_and_replaced, first, tmp_path))
                reply = await asyncio.wait_for(sync_call, 110)
                assert _lost(reply), reply
                assert "sending it again is safe" in reply.message
                replies = await asyncio.wait_for(asyncio.gather(*calls), 110)
                assert all(_lost(reply) for reply in replies), replies
                again = await asyncio.to_thread(sync_client.generate, "again", width=64, height=64)
                assert isinstance(again, Images), again
                assert isinstance(await asyncio.wait_for(client.generate("after", width=64, height=64), 60), Images)
    finally:
        await asyncio.to_thread(first.stop)
        for engine in replaced:
            assert await asyncio.to_thread(engine.stop) == 0


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("inquire"), "--time-scale", "0.1", backend="sim", workers=1)
    yield engine
    assert engine.stop() == 0


def _replies(client: zmq.Socket, count: int) -> list:
    codec = client_side_codec()
    replies = []
    for _ in range(count):
        assert client.poll(30_000), f"{len(replies)} of {count} replies came"
        replies.append(codec.decode(client.recv_multipart()))
    return replies


def test_the_engine_answers_request_lost_for_what_it_does_not_hold_and_nothing_more_for_what_it_does(engine):
    context = zmq.Context()
    client = raw_client(context, engine.client_address)
    codec = engine_side_codec()
    try:
        lost_before = engine.metric("argus_requests_lost_total")
        client.send_multipart(codec.encode(Generate("held", "a lighthouse", width=64, height=64)))
        client.send_multipart(codec.encode(Inquire(["held", "never sent", "never sent"])))
        first, second = _replies(client, 2)
        assert _lost(first) and first.request_id == "never sent"  # once, though named twice
        assert engine.metric("argus_requests_lost_total") == lost_before + 1
        assert isinstance(second, Images) and second.request_id == "held"
        assert not client.poll(1000)  # no request_lost for it: it was held, and answered once
        # asked after once answered: the engine holds it no more
        client.send_multipart(codec.encode(Inquire(["held"])))
        assert _lost(_replies(client, 1)[0])
    finally:
        client.close()
        context.term()


def test_a_request_asked_after_twice_is_answered_twice_and_counted_lost_once(engine):
    """A client asks again when the request_lost was lost with another dropped connection: each Inquire counted the
    request in argus_requests_lost_total again. A request sent again under the id, and lost in turn, counts."""
    context = zmq.Context()
    client = raw_client(context, engine.client_address)
    codec = engine_side_codec()
    try:
        lost_before = engine.metric("argus_requests_lost_total")
        for _ in range(2):
            client.send_multipart(codec.encode(Inquire(["twice"])))
            assert _lost(_replies(client, 1)[0])
        assert engine.metric("argus_requests_lost_total") == lost_before + 1
        client.send_multipart(codec.encode(Generate("twice", "a lighthouse", width=64, height=64)))
        assert isinstance(_replies(client, 1)[0], Images)
        client.send_multipart(codec.encode(Inquire(["twice"])))  # its reply lost, as far as the engine knows
        assert _lost(_replies(client, 1)[0])
        assert engine.metric("argus_requests_lost_total") == lost_before + 2
    finally:
        client.close()
        context.term()


@pytest.mark.parametrize(
    ("ids", "words"),
    [([], "Expected `array` of length >= 1"), (["x"] * (MAX_INQUIRED_IDS + 1), f"length <= {MAX_INQUIRED_IDS}")],
)
def test_an_inquiry_out_of_bounds_is_refused(engine, ids, words):
    context = zmq.Context()
    client = raw_client(context, engine.client_address)
    try:
        client.send_multipart([msgspec.msgpack.encode({"type": "inquire", "request_ids": ids})])
        (reply,) = _replies(client, 1)
        assert isinstance(reply, Error) and reply.code == "invalid_request", reply
        assert words in reply.message
    finally:
        client.close()
        context.term()


def test_a_reply_kept_for_a_client_while_it_was_gone_is_its_one_answer_when_it_asks_after_the_request(engine):
    """The reply found the client gone and was kept; the client, back under its identity, asks after the request: it
    gets that reply, and no request_lost after it (the engine holds the request no more, but answered it)."""
    context = zmq.Context()
    identity = b"a client that comes back"
    answered = engine.metric("argus_requests_total", outcome="ok", code="")
    gone = raw_client(context, engine.client_address, identity)
    gone.send_multipart(engine_side_codec().encode(Generate("kept", "a lighthouse", width=64, height=64)))
    assert wait_for(lambda: engine.metric("argus_queued_images") == 1)
    gone.close()
    assert wait_for(lambda: engine.metric("argus_requests_total", outcome="ok", code="") == answered + 1)
    back = raw_client(context, engine.client_address, identity)
    try:
        back.send_multipart(engine_side_codec().encode(Inquire(["kept"])))
        (reply,) = _replies(back, 1)
        assert isinstance(reply, Images) and reply.request_id == "kept", reply
        assert not back.poll(1000)
    finally:
        back.close()
        context.term()
