"""The replies of a client the ZeroMQ door found gone: kept in order, and handed over whole, each once, when it is back;
decided in process with an engine stood in (tests/engine_stand_in.py).
With an engine: tests/test_zmq_front_door.py, tests/test_lost_requests.py."""

import asyncio
import logging

import pytest
from engine_stand_in import StandInEngine, admitted, generate, replies, sent_and_gone, zmq_door_of
from waiting import eventually

from engine.zmq import door as client_door
from protocols.client_messages import Busy, ImageResult, Images
from protocols.codec import Blob

# in process, each in milliseconds: a hang is a failure, not a wait for the suite's 300 s
pytestmark = pytest.mark.timeout(30)


async def answered(*requests) -> None:
    """Each of `requests` answered, its reply tried (a future's callbacks run on the loop's next turn)."""
    for request in requests:
        request.future.set_result(Images(request.spec.request_id, []))
    await asyncio.sleep(0.01)


async def test_a_client_back_gets_the_replies_kept_for_it_in_order_before_any_other(monkeypatch):
    """Kept, the replies are handed over as soon as the client is heard from, not at the next retry, and each once."""
    monkeypatch.setattr(client_door, "_GONE_RETRY_S", 60.0)
    engine = StandInEngine()
    async with zmq_door_of(engine) as served:
        await answered(*await sent_and_gone(engine, served, b"client-a", ["g1", "g2"]))
        client = served.client(b"client-a")  # back, under its identity
        engine.refusal = Busy("g3", 1000, "queue_full")  # answered at once
        client.send_multipart(generate("g3"))
        assert [reply.request_id for reply in await replies(client, 3)] == ["g1", "g2", "g3"]
        await asyncio.sleep(0.05)
        assert not client.poll(0)


async def test_a_client_back_within_its_grace_gets_its_replies_at_the_next_retry(monkeypatch):
    """A client back but silent (its calls waiting) is reached by the retries: the grace counts from the first reply
    that found it gone."""
    monkeypatch.setattr(client_door, "_GONE_RETRY_S", 0.02)
    engine = StandInEngine(client_gone_grace_s=30.0)
    async with zmq_door_of(engine) as served:
        await answered(*await sent_and_gone(engine, served, b"client-a", ["g1"]))
        await asyncio.sleep(0.1)  # a few retries find it gone
        client = served.client(b"client-a")
        assert [reply.request_id for reply in await replies(client, 1)] == ["g1"]
    assert engine.cancelled == []


async def test_the_replies_kept_for_a_client_gone_are_not_tried_again_while_no_connection_is_made(monkeypatch):
    """ZeroMQ tells of no reconnection, but a client back has made a handshake first. With a timer and a failed send
    each at every retry, 3,000 clients gone took 10 to 13% of a core of an engine otherwise idle at 2 to 3%."""
    monkeypatch.setattr(client_door, "_GONE_RETRY_S", 0.02)
    engine = StandInEngine(client_gone_grace_s=30.0)
    async with zmq_door_of(engine) as served:
        await answered(*await sent_and_gone(engine, served, b"client-a", ["g1"]))
        tried = []
        send = served.door._socket.send
        monkeypatch.setattr(
            served.door._socket, "send", lambda identity, frames: tried.append(1) or send(identity, frames)
        )
        await asyncio.sleep(0.05)  # the first retry tries, in case the client came back as the reply found it gone
        tried.clear()
        await asyncio.sleep(0.2)  # ten retries' time
        assert tried == []
        client = served.client(b"client-a")  # back: its handshake lets the next retry try
        assert [reply.request_id for reply in await replies(client, 1)] == ["g1"]


async def test_the_retries_end_once_the_client_is_back(monkeypatch, caplog):
    """One left to run after the client was handed its replies tried a client no longer kept: an error in the loop."""
    monkeypatch.setattr(client_door, "_GONE_RETRY_S", 0.02)
    caplog.set_level(logging.ERROR, logger="asyncio")
    engine = StandInEngine(client_gone_grace_s=30.0)
    async with zmq_door_of(engine) as served:
        back, _ = await sent_and_gone(engine, served, b"client-a", ["a1", "a2"])
        await answered(back)
        await asyncio.sleep(0.05)  # tried again, and again
        client = served.client(b"client-a")
        engine.refusal = Busy("a3", 1000, "queue_full")
        client.send_multipart(generate("a3"))
        assert [reply.request_id for reply in await replies(client, 2)] == ["a1", "a3"]
        await asyncio.sleep(0.1)  # past the retries that were due
    assert [record.getMessage() for record in caplog.records] == []


async def test_the_door_removes_its_socket_file_when_it_closes(tmp_path):
    path = tmp_path / "clients"
    async with zmq_door_of(StandInEngine(), f"ipc://{path}"):
        assert path.exists()
    assert not path.exists()


async def test_a_reply_still_queued_as_the_door_closes_reaches_a_client_reading_after():
    """At shutdown a large image still leaving for a slow client was cut off, and the client waited on in vain."""
    engine = StandInEngine()
    size = 32 << 20  # more than loopback's socket buffers take: most of it is still queued in ZeroMQ
    async with zmq_door_of(engine) as served:
        client = served.client(b"client-a")
        client.send_multipart(generate("g1"))
        request = await admitted(engine)
        image = ImageResult(Blob(bytes(size)), 0, 0, None, 0.0, 0.0, 4, "w0")
        request.future.set_result(Images("g1", [image]))
        await asyncio.sleep(0.01)  # handed to the door's socket
        served.door.close()  # the client has read none of it yet
        (reply,) = await replies(client, 1)
        assert len(reply.images[0].image) == size


async def test_the_replies_kept_for_a_client_still_gone_as_the_door_closes_are_counted_dropped(monkeypatch, caplog):
    """They were let go with the door, in no count: argus_replies_dropped_total said fewer replies lost than were."""
    monkeypatch.setattr(client_door, "_GONE_RETRY_S", 60.0)
    caplog.set_level(logging.INFO, logger="argus.clients")
    engine = StandInEngine(client_gone_grace_s=30.0)
    async with zmq_door_of(engine) as served:
        await answered(*await sent_and_gone(engine, served, b"client-a", ["g1", "g2"]))
        await answered(*await sent_and_gone(engine, served, b"client-b", ["g3"]))
        assert engine.metric("argus_replies_dropped_total", reason="gone") == 0  # kept, within the grace
    assert engine.metric("argus_replies_dropped_total", reason="gone") == 3
    assert "stopping: dropped the 3 replies kept for 2 clients gone" in caplog.text, caplog.text


async def test_a_client_back_as_the_door_closes_gets_the_replies_kept_for_it(monkeypatch):
    """Back but silent, between two retries: handed what was kept as the door closes, not dropped."""
    monkeypatch.setattr(client_door, "_GONE_RETRY_S", 60.0)
    engine = StandInEngine(client_gone_grace_s=30.0)
    async with zmq_door_of(engine) as served:
        await answered(*await sent_and_gone(engine, served, b"client-a", ["g1"]))
        client = served.client(b"client-a")
        # connected: what is sent to it now reaches it
        assert await eventually(lambda: served.door._socket.send(b"client-a", [b""]) == 0, timeout_s=10)
        assert client.recv() == b""
        served.door.close()
        assert [reply.request_id for reply in await replies(client, 1)] == ["g1"]
    assert engine.metric("argus_replies_dropped_total", reason="gone") == 0


async def test_clients_gone_together_have_their_requests_cancelled_in_one_line(monkeypatch, caplog):
    """A client can have this line written at will (a connection, two requests, gone): each was a line of its own,
    as the door's other such lines no longer were. The one said counts the requests of those held back."""
    monkeypatch.setattr(client_door, "_GONE_RETRY_S", 0.02)
    caplog.set_level(logging.INFO, logger="argus.clients")
    engine = StandInEngine(client_gone_grace_s=0.05)
    async with zmq_door_of(engine) as served:
        for gone, identity in enumerate((b"client-a", b"client-b"), 1):
            first, _ = await sent_and_gone(engine, served, identity, ["g1", "g2"])
            await answered(first)  # found gone: its other request is cancelled once the grace is over
            assert await eventually(lambda gone=gone: len(engine.cancelled) == gone)
    said = [r.getMessage() for r in caplog.records if "gone: cancelling" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("gone: cancelling its 1 request"), said
