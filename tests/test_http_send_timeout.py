"""An HTTP client that takes none of its answers is disconnected after --send-timeout, its answers freed, and the
engine serves on; one that reads slowly, some within each timeout, gets them all."""

import asyncio
import json
import logging
import socket
import time
from urllib.parse import urlsplit

import pytest
from waiting import eventually, wait_for

from engine.http.send_timeout import send_timeout
from engine_process import start_engine

# ten 2048 px images at JPEG quality 100, base64: about 880 KB an answer
REQUEST = {
    "prompt": "a harbour at dusk",
    "n": 10,
    "size": "2048x2048",
    "output_format": "jpeg",
    "output_compression": 100,
}
# pipelined on one connection: 8.8 MB of answers, past what the kernel's buffers take in (up to 4 MB a socket)
PIPELINED = 10


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # one engine for both: each test counts the timeouts it adds to those before it
    folder = tmp_path_factory.mktemp("send-timeout")
    engine = start_engine(folder, "--send-timeout", "1", "--time-scale", "0", workers=1, backend="sim")
    yield engine
    assert engine.stop() == 0


def timeouts(engine) -> float:
    return engine.metric("argus_http_send_timeouts_total")


def pipelined_requests(engine, window: int) -> socket.socket:
    address = urlsplit(engine.http)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)  # before connecting: the window it offers
    client.connect((address.hostname, address.port))
    body = json.dumps(REQUEST).encode()
    head = f"POST /v1/images/generations HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: application/json"
    client.sendall((f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body) * PIPELINED)
    return client


def read_to_the_end(client: socket.socket, pause_s: float = 0.0) -> bytes:
    received = bytearray()
    try:
        while chunk := client.recv(1 << 18):
            received += chunk
            time.sleep(pause_s)
            # the count last: a pass over megabytes, made at the end of an answer only
            if received.endswith(b"}") and received.count(b"HTTP/1.1 200") == PIPELINED:
                break  # all there: the connection stays open for a next request
    except ConnectionResetError:
        pass
    return bytes(received)


def test_a_client_that_reads_none_of_its_answers_is_disconnected_and_others_are_served(engine):
    before = timeouts(engine)
    with pipelined_requests(engine, window=4096) as client:
        # it reads nothing: the answers wait in the engine until the timeout
        assert wait_for(lambda: timeouts(engine) == before + 1, timeout_s=60)
        received = read_to_the_end(client)
    assert received.startswith(b"HTTP/1.1 200") and received.count(b"HTTP/1.1 200") < PIPELINED  # cut short
    assert engine.get("/health")[0] == 200


def test_a_client_that_reads_slowly_gets_every_answer(engine):
    before = timeouts(engine)
    with pipelined_requests(engine, window=65536) as client:
        # some of it in every timeout, far within it, at about 1.5 MB/s: the answers wait on the engine's side for
        # several timeouts, which alone does not get a client cut off
        received = read_to_the_end(client, pause_s=0.04)
    assert received.count(b"HTTP/1.1 200") == PIPELINED
    assert timeouts(engine) == before


class _DrainingTransport(asyncio.Transport):
    """A transport whose unsent bytes are `unsent`, one value a look (the last repeated): a client taking some at
    each look, then none."""

    def __init__(self, unsent: list[int]):
        super().__init__()
        self._unsent = unsent
        self.looks = 0
        self.aborted_at_look: int | None = None

    def get_write_buffer_size(self) -> int:
        self.looks += 1
        return self._unsent[min(self.looks, len(self._unsent)) - 1]

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default  # no socket: the transport's buffer alone

    def is_closing(self) -> bool:
        return self.aborted_at_look is not None

    def abort(self) -> None:
        self.aborted_at_look = self.looks


async def test_a_paused_connection_is_kept_while_its_client_takes_some_in_each_timeout():
    """In process, a timeout of milliseconds: the answer takes five timeouts to go, and the connection is cut only
    at the look that finds the client took none since the one before (above, the engine's writes resume before a
    whole timeout, so a real slow reader never reaches that look)."""
    transport = _DrainingTransport([5_000, 4_000, 3_000, 2_000, 1_000, 1_000])
    timed_out = asyncio.Event()
    layer = send_timeout(asyncio.Protocol, 0.001, timed_out.set)()
    layer.connection_made(transport)
    layer.pause_writing()
    await asyncio.wait_for(timed_out.wait(), 10)
    assert transport.aborted_at_look == 6


async def test_connections_closed_together_are_said_in_one_line(caplog):
    """Any client can have its connections closed so at will (requests pipelined, their answers left unread): each
    was a line of its own, a client holding thousands of connections wrote thousands a minute. All are counted."""
    caplog.set_level(logging.INFO, logger="argus.http")
    closed = []
    connections = send_timeout(asyncio.Protocol, 0.001, lambda: closed.append(1))
    transports = [_DrainingTransport([1_000]) for _ in range(3)]  # clients taking nothing
    for transport in transports:
        layer = connections()
        layer.connection_made(transport)
        layer.pause_writing()
    assert await eventually(lambda: all(t.aborted_at_look is not None for t in transports))
    assert len(closed) == 3
    said = [r.getMessage() for r in caplog.records if r.name == "argus.http"]
    assert len(said) == 1 and said[0].startswith("closed an HTTP connection from "), said
