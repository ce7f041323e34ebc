"""The ZeroMQ front door and the engine.client classes; garbage on either ZeroMQ socket is harmless."""

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time

import msgspec
import pytest
import zmq
from tcp_proxy import DroppingProxy
from waiting import eventually, wait_for

from engine.client import ArgusClient, AsyncArgusClient
from engine.client import link as client_module
from engine.config import LaunchConfig
from engine.http.readiness import readiness
from engine.server import Engine
from engine_process import ROOT, in_process_config, raw_client, slow_reading_client, start_engine
from protocols.client_messages import Busy, Error, Generate, Images, client_side_codec
from protocols.worker_messages import PROTOCOL_VERSION, Refused, Rejoin, worker_side_codec

# the tests marked own_engine find theirs started while the tests before them ran
pytestmark = pytest.mark.usefixtures("engines_ahead")


# --max-client-connections of the module's engine: room for every other test's clients at once
_CLIENT_BOUND = 8


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    bound = ("--max-client-connections", str(_CLIENT_BOUND))
    engine = start_engine(tmp_path_factory.mktemp("zmq"), "--time-scale", "0.02", *bound, backend="sim")
    yield engine
    assert engine.stop() == 0


def test_sync_client_gets_images_with_metadata(engine):
    with ArgusClient(engine.client_address, timeout_s=30) as client:
        reply = client.generate("a red bicycle", n=3, width=64, height=72, seed=11, output_format="jpeg")
    assert isinstance(reply, Images)
    assert [image.seed for image in reply.images] == [11, 12, 13]
    for image in reply.images:
        assert image.image[:3] == b"\xff\xd8\xff"  # JPEG
        assert image.level == 0 and image.run_ms > 0 and image.worker.startswith("local-")
        assert image.simulated and image.quality is not None  # sim workers: said so with every image


def _sent_at_once(address: str, prompts: list[str]) -> list:
    """The replies to `prompts`, all in flight at once on one AsyncArgusClient."""

    async def run():
        async with AsyncArgusClient(address) as client:
            return await asyncio.wait_for(
                asyncio.gather(*(client.generate(prompt, width=64, height=64) for prompt in prompts)), 60
            )

    return asyncio.run(run())


def test_async_client_pipelines_many_requests(engine):
    replies = _sent_at_once(engine.client_address, [f"prompt {i}" for i in range(40)])
    assert all(isinstance(r, Images) and len(r.images) == 1 for r in replies)
    assert len({r.request_id for r in replies}) == 40


def test_invalid_request_gets_an_error_reply(engine):
    with ArgusClient(engine.client_address, timeout_s=30) as client:
        reply = client.generate("a cat", width=66, height=64)
        assert isinstance(reply, Error) and reply.code == "invalid_size"
        reply = client.generate("a cat", request_id="r1", width=64, height=64, n=99)
    # n out of range fails strict decoding; the error still names the request
    assert isinstance(reply, Error) and reply.request_id == "r1"
    assert reply.code == "invalid_request" and "<= 10" in reply.message


_VISIBLE = "a character other than whitespace or control characters"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        # msgspec's "Expected `int` >= 1 - at `$.n`": HTTP said it in these words, ZeroMQ in msgspec's
        ({"n": 0}, "n must be an integer >= 1, got 0"),
        # this protocol's field names (HTTP's num_inference_steps and size), each value as Python spells it
        ({"steps": 201}, "steps must be an integer <= 200, got 201"),
        ({"width": -8}, "width must be an integer >= 0, got -8"),  # HTTP: size
        ({"output_format": "gif"}, "output_format 'gif' must be one of 'png', 'jpeg', 'webp'"),
        ({"seed": "7"}, "seed must be an integer, got '7'"),
        ({"prompt": "x" * 4001}, "prompt must be a string of length <= 4000, got 4001 characters"),
        # whitespace alone, as HTTP refuses it: it was served
        ({"prompt": " \n\t"}, f"prompt must be a string with {_VISIBLE}, got 3 characters"),
        # control characters alone, as HTTP refuses them: NULs were served, their embedding the zero vector, cached
        ({"prompt": "\x00\x00\x9f"}, f"prompt must be a string with {_VISIBLE}, got 3 characters"),
        ({"output_format": "g" * 100_000}, "output_format 'gggggggggggg...ggggggggggggg' must be one of"),
    ],
    ids=["n", "steps", "width", "output_format", "seed", "prompt", "blank prompt", "control prompt", "long value"],
)
def test_a_refused_field_is_named_in_the_words_http_uses(engine, fields, message):
    bad_messages = engine.metric("argus_bad_messages_total", link="client")
    with ArgusClient(engine.client_address, timeout_s=30) as client:
        request = {"prompt": "a cat", "width": 64, "height": 64, **fields}
        reply = client.generate(request.pop("prompt"), request_id="r1", **request)
    assert isinstance(reply, Error) and (reply.request_id, reply.code) == ("r1", "invalid_request")
    assert reply.message.startswith(message), reply.message
    # bad input, counted as HTTP's 400s are, not as garbage on the wire
    assert engine.metric("argus_bad_messages_total", link="client") == bad_messages


def test_none_is_a_fields_default_to_the_client_and_refused_on_the_wire(engine):
    """HTTP's null is a field's default. A pipeline passing its optional settings on (steps=None) was refused
    'Expected `int`, got `None`' for every field whose default is not None."""
    unset = dict.fromkeys(("n", "steps", "guidance_scale", "exact", "output_format", "negative_prompt", "seed"))
    with ArgusClient(engine.client_address, timeout_s=30) as client:
        reply = client.generate("a cat", width=64, height=None, **unset)
    assert isinstance(reply, Images) and len(reply.images) == 1
    # a field is its value or left out: nil, sent by hand, is refused in a message that says so
    context = zmq.Context()
    sock = raw_client(context, engine.client_address)
    try:
        sock.send(msgspec.msgpack.encode({"type": "generate", "request_id": "r1", "prompt": "a cat", "n": None}))
        assert sock.poll(10_000)
        reply = client_side_codec().decode(sock.recv_multipart())
    finally:
        sock.close()
        context.term()
    assert isinstance(reply, Error) and reply.message == "n must be an integer, got None"


def _survives(engine) -> None:
    with ArgusClient(engine.client_address, timeout_s=30) as client:
        assert isinstance(client.generate("still alive", width=64, height=64), Images)
    assert engine.ready()["ready"]


def test_garbage_to_the_client_door_is_answered_not_fatal(engine):
    bad_messages = engine.metric("argus_bad_messages_total", link="client")
    context = zmq.Context()
    sock = raw_client(context, engine.client_address)
    codec = client_side_codec()
    try:
        payloads = [
            [os.urandom(64)],
            [b""],
            [msgspec.msgpack.encode({"type": "generate"})],
            # a reply kind, not a request
            [msgspec.msgpack.encode({"type": "images", "request_id": "x", "images": []})],
            [msgspec.msgpack.encode({"type": "generate", "request_id": "a", "prompt": "p"}), os.urandom(10)],
            [msgspec.msgpack.encode([1, 2, 3])],
        ]
        for frames in payloads:
            sock.send_multipart(frames)
            assert sock.poll(10_000), f"no answer to {frames!r}"
            reply = codec.decode(sock.recv_multipart())
            # the last-but-one is a valid request with a stray frame: served; the rest are errors
            assert isinstance(reply, (Error, Images))
    finally:
        sock.close()
        context.term()
    assert engine.metric("argus_bad_messages_total", link="client") == bad_messages + len(payloads) - 1
    _survives(engine)


def test_a_request_frame_far_larger_than_any_request_is_cut_off_before_it_is_buffered(engine):
    longest = "\U0001f98a" * 4000  # the longest prompt, 4 bytes a character: still served
    with ArgusClient(engine.client_address, timeout_s=30) as client:
        assert isinstance(client.generate(longest, width=64, height=64), Images)
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    dropped = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    sock.connect(engine.client_address)
    try:
        header = msgspec.msgpack.encode({"type": "generate", "request_id": "huge", "prompt": "x" * (1 << 20)})
        sock.send_multipart([header])
        # libzmq drops the connection: nothing reaches the engine to answer (the drop waited for, not a second)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(dropped, zmq.POLLIN)
        assert dict(poller.poll(30_000)) == {dropped: zmq.POLLIN}, "answered, or never dropped"
    finally:
        sock.disable_monitor()
        dropped.close()
        sock.close()
        context.term()
    _survives(engine)


def test_a_request_the_engine_would_cut_the_connection_on_is_refused_before_it_is_sent(engine):
    # sent, it had the engine drop the client's connection: the call got the request_lost its reconnection brought,
    # which says sending it again is safe, and each of its retries was sent and lost alike
    huge = "x" * 300_000
    lost = engine.metric("argus_requests_lost_total")
    refused = r"is 300,\d{3} bytes, past the 262,144 the engine reads"
    with ArgusClient(engine.client_address, timeout_s=30, retries=2) as client:
        with pytest.raises(ValueError, match=refused):
            client.generate(huge)
        with pytest.raises(ValueError, match=refused):
            client.generate("a fox", negative_prompt=huge)
        assert isinstance(client.generate("a fox", width=64, height=64), Images)

    async def run():
        async with AsyncArgusClient(engine.client_address, retries=2) as client:
            with pytest.raises(ValueError, match=refused):
                await asyncio.wait_for(client.generate(huge, request_id="huge"), 30)
            # its id left free
            return await asyncio.wait_for(client.generate("a fox", request_id="huge", width=64, height=64), 30)

    assert isinstance(asyncio.run(run()), Images)
    assert engine.metric("argus_requests_lost_total") == lost


def test_garbage_to_the_worker_socket_is_dropped_not_fatal(engine):
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(engine.worker_address)
    try:
        for frames in (
            [os.urandom(32)],
            [b"", b"", b""],
            [msgspec.msgpack.encode({"type": "done", "request_id": "j0", "batch_id": 1})],
            [msgspec.msgpack.encode({"type": "heartbeat", "level": 0, "running_batch": -1})],
            [msgspec.msgpack.encode({"type": "hello", "protocol": 1})],
        ):
            sock.send_multipart(frames)
        replies = []
        # the two answers, however long the engine takes to get to them (a loaded machine), then nothing more
        while (len(replies) < 2 and sock.poll(30_000)) or sock.poll(500):
            replies.append(worker_side_codec().decode(sock.recv_multipart(copy=False)))
        # a stranger gets no welcome and no work: its well-formed heartbeat is answered with Rejoin (say hello
        # first), as a worker the engine dropped would be, and its hello of another version is Refused naming both
        assert replies == [Rejoin(), Refused(f"protocol 1 not supported (engine speaks {PROTOCOL_VERSION})")]
    finally:
        sock.close()
        context.term()
    _survives(engine)
    assert engine.metric("argus_bad_messages_total", link="worker") >= 4


def test_a_client_pointed_at_the_worker_address_is_answered_an_error_naming_the_client_address(engine):
    """A request sent to the engine's worker address was dropped unheard: the call waited for its timeout, and for
    ever without one (AsyncArgusClient, ArgusClient without timeout_s)."""
    with ArgusClient(engine.worker_address, timeout_s=30) as client:
        reply = client.generate("a fox", request_id="r1", width=64, height=64)
    assert isinstance(reply, Error) and (reply.request_id, reply.code) == ("r1", "invalid_request")
    assert "worker address" in reply.message and "--client-listen" in reply.message
    _survives(engine)


def test_a_client_connection_past_the_bound_waits_within_its_timeout_and_gets_in_once_one_ends(engine):
    """libzmq bounds no connections, and each one held a descriptor and about 24 KB of the engine until it ended:
    5,000 idle clients took an engine from 137 to 257 MB, and 19,000 in turns to 475 MB. A client refused for the
    bound dials again: it raised ConnectionRefusedError for good, its user to make another client."""
    codec = client_side_codec()
    context = zmq.Context()
    held = [raw_client(context, engine.client_address) for _ in range(_CLIENT_BOUND)]
    waiting = []
    try:
        for i, sock in enumerate(held):
            sock.send_multipart(codec.encode(Generate(f"h{i}", "a heron", width=64, height=64)))
        for sock in held:  # each connection made and served
            assert sock.poll(30_000) and isinstance(codec.decode(sock.recv_multipart()), Images)
        refused = engine.metric("argus_zmq_client_connections_refused_total")
        with ArgusClient(engine.client_address, timeout_s=1) as client:
            with pytest.raises(TimeoutError, match="as its --max-client-connections allows"):
                client.generate("one too many", width=64, height=64)

        async def one_too_many() -> None:
            async with AsyncArgusClient(engine.client_address, timeout_s=1) as client:
                await client.generate("one too many", width=64, height=64)

        with pytest.raises(TimeoutError, match="as its --max-client-connections allows"):
            asyncio.run(one_too_many())
        assert engine.metric("argus_zmq_client_connections_refused_total") > refused
        # made once the door is full: each dials as it is made
        waiting += [
            ArgusClient(engine.client_address, timeout_s=60),
            AsyncArgusClient(engine.client_address, timeout_s=60),
        ]
        replies = []

        def blocking() -> None:
            replies.append(waiting[0].generate("room again", width=64, height=64))

        def pipelined() -> None:
            replies.append(asyncio.run(waiting[1].generate("room again", width=64, height=64)))

        refused = engine.metric("argus_zmq_client_connections_refused_total")
        calls = [threading.Thread(target=blocking), threading.Thread(target=pipelined)]
        for call in calls:
            call.start()
        # turned away, and dialling again
        assert wait_for(lambda: engine.metric("argus_zmq_client_connections_refused_total") >= refused + 4)
        held.pop().close()
        held.pop().close()
        for call in calls:
            call.join()
        assert len(replies) == 2 and all(isinstance(reply, Images) for reply in replies), replies
    finally:
        if waiting:
            waiting[0].close()
            asyncio.run(waiting[1].close())
        for sock in held:
            sock.close()
        context.term()


def test_a_client_cut_off_and_refused_coming_back_gets_the_reply_kept_for_it_once_in(engine):
    """A client whose connection dropped, and that met the door full as it dialled again, was refused for good: its
    reply, kept for it for --client-gone-grace, was lost."""
    proxy = DroppingProxy(int(engine.client_address.rsplit(":", 1)[1]))
    context = zmq.Context()
    held = [raw_client(context, engine.client_address) for _ in range(_CLIENT_BOUND - 1)]
    replies = []
    try:
        with ArgusClient(proxy.address, timeout_s=60) as client:

            def call() -> None:
                replies.append(client.generate("a slow lighthouse", width=512, height=512))

            calling = threading.Thread(target=call)
            calling.start()
            assert wait_for(lambda: engine.metric("argus_running_images") == 1)
            refused = engine.metric("argus_zmq_client_connections_refused_total")
            proxy.drop_all()
            held.append(raw_client(context, engine.client_address))  # the connection the client had
            assert wait_for(lambda: engine.metric("argus_zmq_client_connections_refused_total") > refused)
            held.pop(0).close()
            calling.join()
        assert len(replies) == 1 and isinstance(replies[0], Images), replies
    finally:
        proxy.close()
        for sock in held:
            sock.close()
        context.term()


# about 1 s an image: the six are admitted or refused within milliseconds, long before the first is answered
@pytest.mark.own_engine("--time-scale", "0.2", "--max-queue", "2", workers=1, backend="sim")
def test_busy_when_the_queue_is_full(own_engine):
    replies = _sent_at_once(own_engine.client_address, [f"p{i}" for i in range(6)])
    busy = [r for r in replies if isinstance(r, Busy)]
    served = [r for r in replies if isinstance(r, Images)]
    assert len(served) == 2 and len(busy) == 4
    assert all(b.retry_after_ms > 0 for b in busy)


# one image at a time, about 1 s each
@pytest.mark.own_engine("--time-scale", "0.2", "--max-queue", "4", "--max-batch", "1", workers=1, backend="sim")
def test_a_client_refused_at_a_full_queue_gets_the_next_room_not_the_client_that_filled_it(own_engine):
    """Before, room went to whichever request came first: a pipeline that retried each Busy at once kept the queue
    full, and every other client got Busy for as long as it ran."""

    async def run():
        async with (
            AsyncArgusClient(own_engine.client_address) as pipeline,
            AsyncArgusClient(own_engine.client_address) as person,
        ):
            # of one step (0.14 s, not 1 s), those that need not last: the pipeline holds its share (two of four)
            # as it asks again while its second image runs, and a share counts images whatever their steps
            one_step = {"steps": 1}
            queued = [
                asyncio.create_task(pipeline.generate(f"batch {i}", width=64, height=64, **fields))
                for i, fields in enumerate(({}, {}, one_step, one_step))
            ]
            assert await eventually(lambda: own_engine.metric("argus_queued_images") == 4, timeout_s=30)  # full
            refused = await person.generate("a portrait", width=64, height=64)
            first = await asyncio.wait_for(queued[0], 60)  # one image done: room for one
            pipeline_again = await pipeline.generate("batch 4", width=64, height=64, **one_step)
            person_again = await asyncio.wait_for(person.generate("a portrait", width=64, height=64, **one_step), 60)
            return refused, first, pipeline_again, person_again, await asyncio.gather(*queued[1:])

    refused, first, pipeline_again, person_again, rest = asyncio.run(run())
    assert isinstance(refused, Busy) and refused.reason == "queue_full"
    assert isinstance(first, Images)
    assert isinstance(pipeline_again, Busy) and pipeline_again.reason == "client_share"
    assert isinstance(person_again, Images) and all(isinstance(r, Images) for r in rest)
    assert own_engine.metric("argus_requests_total", outcome="busy", code="client_share") == 1
    assert own_engine.metric("argus_requests_total", outcome="busy", code="queue_full") == 1


@pytest.mark.own_engine("--time-scale", "0.25", backend="sim", workers=1)  # an image takes about 1.25 s
def test_a_client_whose_connection_drops_gets_its_reply_over_the_next(own_engine):
    """The reply goes to the identity that asked: a reconnected client must keep it to get its reply."""
    proxy = DroppingProxy(int(own_engine.client_address.rsplit(":", 1)[1]))

    def drop_once_running() -> None:
        # once the request is in flight, not after a fixed wait: a client slow to connect (a loaded machine) may not
        # have sent it by then, and its one connection would never be cut
        if wait_for(lambda: own_engine.metric("argus_running_images") == 1):
            proxy.drop_all()

    dropping = threading.Thread(target=drop_once_running)
    try:
        with ArgusClient(proxy.address, timeout_s=60) as client:
            dropping.start()
            reply = client.generate("a lighthouse at dusk", width=64, height=64)
        dropping.join()
        assert isinstance(reply, Images)
        assert proxy.accepted >= 2  # the client did reconnect
    finally:
        proxy.close()


# one image at a time, about 1 s each: `long` ends about 2 s after `short`, past the 1 s grace
@pytest.mark.own_engine(
    "--time-scale", "0.2", "--max-batch", "1", "--client-gone-grace", "1", backend="sim", workers=1
)  # fmt: skip
def test_a_client_back_after_a_reply_found_it_gone_gets_that_reply_and_keeps_its_other_requests(own_engine):
    """Before, the reply that found it gone was lost, and its other requests were cancelled at the grace's end though
    it was connected again: the engine hears of no reconnection, and took a client silent since for one gone."""
    proxy = DroppingProxy(int(own_engine.client_address.rsplit(":", 1)[1]))

    async def scenario():
        async with AsyncArgusClient(proxy.address) as client:
            short = asyncio.create_task(client.generate("short", width=64, height=64))
            assert await asyncio.to_thread(wait_for, lambda: own_engine.metric("argus_queued_images") == 1)
            long = asyncio.create_task(client.generate("long", width=64, height=64, n=2))
            assert await asyncio.to_thread(wait_for, lambda: own_engine.metric("argus_queued_images") == 3)
            # the connection is cut, and the client cannot connect again until `short` is answered
            proxy.flowing.clear()
            proxy.drop_all()
            answered = lambda: own_engine.metric("argus_requests_total", outcome="ok", code="") == 1  # noqa: E731
            assert await asyncio.to_thread(wait_for, answered)
            proxy.flowing.set()
            reply = await asyncio.wait_for(long, 60)
            assert isinstance(reply, Images), reply  # was Cancelled
            assert isinstance(await asyncio.wait_for(short, 10), Images)  # was lost

    try:
        asyncio.run(scenario())
        assert own_engine.metric("argus_replies_dropped_total", reason="gone") == 0
    finally:
        proxy.close()


@pytest.mark.own_engine("--time-scale", "0.01", backend="sim", workers=1)
def test_a_client_whose_connection_dies_without_a_word_dials_again(own_engine, monkeypatch):
    """The engine's host gone, or a NAT that forgot the flow: TCP tells the client nothing, and every call after
    timed out, for ever through a proxy (about 15 minutes to a host gone), whatever engine came up on the address."""
    monkeypatch.setattr(client_module, "_HEARTBEAT_INTERVAL_MS", 200)
    monkeypatch.setattr(client_module, "_HEARTBEAT_TIMEOUT_MS", 1000)
    proxy = DroppingProxy(int(own_engine.client_address.rsplit(":", 1)[1]))
    try:
        with ArgusClient(proxy.address, timeout_s=30) as client:
            assert isinstance(client.generate("before", width=64, height=64), Images)
            proxy.go_silent()
            # sent into the dead connection, it never reached the engine: asked after once the client dialled again,
            # it is answered request_lost (before, the call timed out)
            lost = client.generate("after", width=64, height=64)
            assert isinstance(lost, Error) and lost.code == "request_lost", lost
            assert isinstance(client.generate("again", width=64, height=64), Images)
        assert proxy.accepted == 2
    finally:
        proxy.close()


# it may leave --max-queue + 256 unread: the --max-queue it may have admitted can all be answered at once
_WAVE = 50


@pytest.mark.own_engine("--time-scale", "0", "--max-queue", str(_WAVE), backend="sim")
def test_replies_a_client_leaves_unread_are_bounded_and_counted(own_engine):
    """Each reply is delivered or counted dropped, and the engine holds a bounded number for a client that
    does not read: it held them all before, gigabytes of images."""
    codec = client_side_codec()
    context = zmq.Context()
    client = slow_reading_client(context, own_engine.client_address)
    requests = 600  # large images: the kernel's socket buffers take fewer than a hundred
    try:
        deadline = time.monotonic() + 120
        for first in range(0, requests, _WAVE):  # each wave admitted whole: no Busy
            for i in range(first, first + _WAVE):
                client.send_multipart(codec.encode(Generate(f"r{i}", f"picture {i}", width=2048, height=2048)))
            while own_engine.metric("argus_requests_total", outcome="ok", code="") < first + _WAVE:
                assert time.monotonic() < deadline, "the engine did not answer"
                time.sleep(0.05)
        dropped = own_engine.metric("argus_replies_dropped_total", reason="unread")
        received = 0
        # each held reply, however long the engine takes to pass on the next (a loaded machine), then nothing more
        while (received + dropped < requests and client.poll(30_000)) or client.poll(500):
            assert isinstance(codec.decode(client.recv_multipart()), Images)
            received += 1
        assert dropped > 0 and received + dropped == requests
        assert own_engine.metric("argus_replies_dropped_total", reason="gone") == 0
    finally:
        client.close(linger=0)
        context.term()


async def test_a_client_sending_faster_than_the_engine_reads_waits_to_send_and_loses_nothing(tmp_path):
    """ZeroMQ read 100,000 messages ahead from each client, of up to 256 KiB each: a client that sent faster than the
    engine handled them (each refused) had the engine buffer its backlog, 2.4 GB in 10 s."""
    engine = Engine(in_process_config(tmp_path, launch=LaunchConfig(count=0)))  # bound, and not yet reading
    codec = client_side_codec()
    context = zmq.Context()
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.SNDHWM, 1)
    client.setsockopt(zmq.SNDBUF, 4096)  # what waits is in the client's queue of one and the kernel's buffers
    client.connect(engine.clients.endpoints[0])
    refused = msgspec.msgpack.encode({"type": "generate", "request_id": "r", "prompt": "x" * 200_000})
    cap = 400

    def send_until_held() -> int:
        # held once no room came for a second: nothing frees any while the engine does not read (one that read ahead
        # without bound never holds the client at all, however long this waits)
        for sent in range(cap):
            if not client.poll(1_000, zmq.POLLOUT):
                return sent
            client.send(refused, zmq.DONTWAIT)
        return cap

    try:
        sent = await asyncio.to_thread(send_until_held)
        # the engine's read-ahead and the kernel's buffers between the two (a few MB: tens of these messages)
        assert sent < cap / 2
        running = asyncio.create_task(engine.run())
        try:
            for _ in range(sent):  # every message held back is read once the engine reads, and answered
                assert await eventually(lambda: client.poll(0), timeout_s=60)
                reply = codec.decode(client.recv_multipart())
                assert isinstance(reply, Error) and reply.code == "invalid_request"
        finally:
            engine.request_stop()
            await asyncio.wait_for(running, 30)
        assert not client.poll(500)
    finally:
        client.close(linger=0)
        context.term()


async def test_no_log_names_a_client_identity_whole(tmp_path, caplog):
    """Whoever has a client's identity takes its replies over (ROUTER_HANDOVER): a debug line named it whole."""
    caplog.set_level(logging.DEBUG)
    # a worker that takes about half a second an image: the client is gone well before its reply
    engine = Engine(in_process_config(tmp_path, launch=LaunchConfig(count=1, backend="sim", time_scale=0.1)))
    running = asyncio.create_task(engine.run())
    context = zmq.Context()
    identity = b"a client's secret identity"
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.IDENTITY, identity)
    client.connect(engine.clients.endpoints[0])
    try:
        assert await eventually(lambda: readiness(engine)["ready"], timeout_s=60)
        client.send_multipart(client_side_codec().encode(Generate("r", "a fox", width=64, height=64)))
        client.close(linger=-1)  # gone before the engine answers
        assert await eventually(lambda: "went away before its reply" in caplog.text)
        assert "send to" in caplog.text
        assert identity.decode() not in caplog.text and identity.hex() not in caplog.text
    finally:
        context.term()
        engine.request_stop()
        await asyncio.wait_for(running, 30)


_FIRST_PEER_NAME = """
import zmq
from protocols.sockets import make_socket
context = zmq.Context()
router = make_socket(context, zmq.ROUTER)
router.bind("inproc://door")
client = context.socket(zmq.DEALER)  # no identity of its own: the ROUTER names it
client.connect("inproc://door")
client.send(b"hello")
print(router.recv_multipart()[0].hex())
"""


def test_the_name_a_router_gives_a_peer_without_an_identity_differs_at_every_start():
    """libzmq counts such names from a start drawn with an unseeded rand(): the first client of every engine was
    006b8b4567, and any peer that connected under that name took its replies over."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    names = {
        subprocess.run(
            [sys.executable, "-c", _FIRST_PEER_NAME], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(3)
    }
    assert len(names) == 3


# one worker, one image at a time, about 1.25 s each: the six requests would keep it busy for 7.5 s
@pytest.mark.own_engine(
    "--time-scale", "0.25", "--max-batch", "1", "--client-gone-grace", "0.5", workers=1, backend="sim"
)  # fmt: skip
def test_the_requests_of_a_client_killed_with_them_in_flight_are_cancelled(own_engine):
    """Before, the engine made every image a killed pipeline had asked for, for no one."""
    pipeline = subprocess.Popen(
        [sys.executable, "-c", _PIPELINE, own_engine.client_address],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 60
        while own_engine.metric("argus_queued_images") < 6:
            assert time.monotonic() < deadline and pipeline.poll() is None, "the requests were not admitted"
            time.sleep(0.05)
        pipeline.kill()
        pipeline.wait()
        answered = {}
        while sum(answered.values()) < 6:
            assert time.monotonic() < deadline, f"still in flight: {answered}"
            time.sleep(0.2)
            answered = {o: own_engine.metric("argus_requests_total", outcome=o, code="") for o in ("ok", "cancelled")}
        # the first reply found it gone; what was left once it had stayed gone the 0.5 s grace was cancelled: three
        # or more of six (1 or 2 with a grace as long as four images: it ends once about 5 of them are made)
        assert answered["ok"] >= 1 and answered["cancelled"] >= 3, answered
        # and every reply, kept for it until it had stayed gone as long in its turn, dropped
        assert wait_for(lambda: own_engine.metric("argus_replies_dropped_total", reason="gone") == 6)
    finally:
        pipeline.kill()


_PIPELINE = """
import asyncio, sys
from engine.client import AsyncArgusClient

async def main():
    client = AsyncArgusClient(sys.argv[1])
    await asyncio.gather(*(client.generate(f"picture {i}", width=64, height=64) for i in range(6)))

asyncio.run(main())
"""
