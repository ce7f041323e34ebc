"""What the ZeroMQ door answers and counts for each message a client sends, decided in process with an engine stood
in (tests/engine_stand_in.py). With an engine: tests/test_zmq_front_door.py, tests/test_client_door_ids.py."""

import asyncio

import pytest
import zmq
from engine_stand_in import StandInEngine, admitted, generate, replies, sent_and_gone, zmq_door_of
from waiting import eventually

from engine.zmq import door as client_door
from protocols.client_messages import (
    Cancel,
    Cancelled,
    Error,
    FromClient,
    Generate,
    Images,
    Inquire,
    client_side_codec,
)
from protocols.codec import Codec

_CLIENT_CODEC = client_side_codec()
_DOOR_CODEC = Codec(FromClient)  # what a client sends

# in process, each in milliseconds: a hang is a failure, not a wait for the suite's 300 s
pytestmark = pytest.mark.timeout(30)


async def test_a_second_generate_under_an_id_in_flight_is_refused_and_counted_refused():
    engine = StandInEngine()
    async with zmq_door_of(engine) as served:
        client = served.client(b"client-a")
        client.send_multipart(generate("g1"))
        await admitted(engine)
        client.send_multipart(generate("g1"))
        (reply,) = await replies(client, 1)
        assert isinstance(reply, Error) and (reply.request_id, reply.code) == ("", "invalid_request")
    assert engine.metric("argus_requests_total", outcome="rejected", code="invalid_request") == 1
    assert len(engine.admitted) == 1


async def test_a_request_refused_for_a_value_is_answered_under_its_id_and_is_not_counted_garbage():
    """A field's bad value (n 0) is a client's bad input, as an HTTP 400 is: an alert on garbage fired on each."""
    engine = StandInEngine()
    async with zmq_door_of(engine) as served:
        client = served.client(b"client-a")
        client.send_multipart(_CLIENT_CODEC.encode(Generate("g1", "a heron", n=0)))
        (reply,) = await replies(client, 1)
    assert (reply.request_id, reply.code) == ("g1", "invalid_request")
    assert engine.metric("argus_bad_messages_total", link="client") == 0
    assert engine.metric("argus_requests_total", outcome="rejected", code="invalid_request") == 1


async def test_a_message_of_no_known_kind_is_counted_garbage():
    engine = StandInEngine()
    async with zmq_door_of(engine) as served:
        client = served.client(b"client-a")
        client.send_multipart([b"not msgpack at all"])
        (reply,) = await replies(client, 1)
    assert reply.code == "invalid_request"
    assert engine.metric("argus_bad_messages_total", link="client") == 1


async def test_a_cancel_reaches_the_dispatcher_for_the_clients_own_request_only():
    engine = StandInEngine()
    async with zmq_door_of(engine) as served:
        client, other = served.client(b"client-a"), served.client(b"client-b")
        client.send_multipart(generate("g1"))
        request = await admitted(engine)
        other.send_multipart(_CLIENT_CODEC.encode(Cancel("g1")))  # the same id, another client's
        other.send_multipart(generate("o1"))
        await admitted(engine, 1)  # what came before it on that connection was handled
        client.send_multipart(_CLIENT_CODEC.encode(Cancel("g1")))
        assert await eventually(lambda: engine.cancelled == [request], timeout_s=5)


async def test_an_inquiry_is_answered_request_lost_only_for_what_the_engine_does_not_hold():
    engine = StandInEngine()
    async with zmq_door_of(engine) as served:
        client = served.client(b"client-a")
        client.send_multipart(generate("g1"))
        request = await admitted(engine)
        client.send_multipart(_CLIENT_CODEC.encode(Inquire(["g1", "g0"])))
        (lost,) = await replies(client, 1)
        assert (lost.request_id, lost.code) == ("g0", "request_lost")
        request.future.set_result(Images("g1", []))
        (reply,) = await replies(client, 1)
        assert isinstance(reply, Images) and reply.request_id == "g1"
    assert engine.metric("argus_requests_lost_total") == 1


async def test_a_client_back_asking_after_a_reply_kept_for_it_gets_that_reply_and_no_request_lost(monkeypatch):
    monkeypatch.setattr(client_door, "_GONE_RETRY_S", 60.0)  # handed over because it was heard from, not by a retry
    engine = StandInEngine()
    async with zmq_door_of(engine) as served:
        (request,) = await sent_and_gone(engine, served, b"client-a", ["g1"])
        request.future.set_result(Images("g1", []))
        await asyncio.sleep(0.01)  # the reply finds it gone, and is kept
        client = served.client(b"client-a")
        client.send_multipart(_CLIENT_CODEC.encode(Inquire(["g1"])))
        (reply,) = await replies(client, 1)
        assert isinstance(reply, Images) and reply.request_id == "g1"
        await asyncio.sleep(0.05)
        assert not client.poll(0)
    assert engine.metric("argus_requests_lost_total") == 0


async def test_a_client_connecting_again_under_its_identity_takes_its_replies_from_the_old_connection():
    """A dropped TCP connection the engine still thinks alive must not keep the client's replies from it."""
    engine = StandInEngine()
    async with zmq_door_of(engine) as served:
        old = served.client(b"client-a")
        old.send_multipart(generate("g1"))
        request = await admitted(engine)
        new = served.client(b"client-a")
        new.send_multipart(generate("g2"))  # heard from on the new connection: it took the identity over
        await admitted(engine, 1)
        request.future.set_result(Images("g1", []))
        (reply,) = await replies(new, 1)
        assert reply.request_id == "g1"


async def test_a_cancel_and_a_generate_under_one_id_read_in_one_pass_cancel_the_old_request_and_serve_the_new():
    """The Cancel answers the request at once, but the door lets its id go only when the reply is sent, a loop turn
    later: the Generate read after it in the same pass was refused as a second one in flight."""
    engine = StandInEngine()
    engine.cancel = lambda *requests: [request.finish(Cancelled(request.spec.request_id)) for request in requests]
    async with zmq_door_of(engine) as served:
        client = served.client(b"client-a")
        client.send_multipart(generate("g1"))
        first = await admitted(engine)
        for frames in (_CLIENT_CODEC.encode(Cancel("g1")), generate("g1")):  # one pass: no loop turn in between
            served.door._on_frames(b"client-a", [zmq.Frame(frame) for frame in frames])
        second = await admitted(engine, 1)
        (cancelled,) = await replies(client, 1)
        assert isinstance(cancelled, Cancelled) and cancelled.request_id == "g1"
        second.future.set_result(Images("g1", []))
        (served_reply,) = await replies(client, 1)
        assert isinstance(served_reply, Images) and served_reply.request_id == "g1"
    assert first.future.result() == Cancelled("g1")
    assert engine.metric("argus_requests_total", outcome="rejected", code="invalid_request") == 0


async def test_the_answers_to_the_inquiries_of_a_client_gone_are_not_kept_for_it(monkeypatch):
    """A client asks again at its next connection: kept, the 64 Inquires of 256 ids the door reads ahead of a client
    that left made 16,384 answers for each of its connections, and 100 of them grew the engine by 900 MB."""
    monkeypatch.setattr(client_door, "_GONE_RETRY_S", 60.0)  # kept until it is heard from again
    engine = StandInEngine()
    async with zmq_door_of(engine) as served:
        (request,) = await sent_and_gone(engine, served, b"client-a", ["g1"])
        for batch in range(64):  # read from its connection after it left, as libzmq hands them on
            inquiry = Inquire([f"lost-{batch}-{n}" for n in range(255)] + ["g1"])
            served.door._on_frames(b"client-a", [zmq.Frame(frame) for frame in _DOOR_CODEC.encode(inquiry)])
        request.future.set_result(Images("g1", []))  # its reply is kept for it
        await asyncio.sleep(0.01)
        client = served.client(b"client-a")
        client.send_multipart(_CLIENT_CODEC.encode(Inquire(["g1", "lost-63-254"])))  # back, it asks again
        first, second = await replies(client, 2)
        assert isinstance(first, Images) and first.request_id == "g1"
        assert (second.request_id, second.code) == ("lost-63-254", "request_lost")
        await asyncio.sleep(0.05)
        assert not client.poll(0)  # nothing more: the answers made while it was gone were not kept
    assert engine.metric("argus_requests_lost_total") == 64 * 255  # each counted once, asked after twice or not
