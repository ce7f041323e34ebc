"""A chunk of a request body that does not parse is a 400 malformed_request at once, counted as the request's answer,
whatever TCP segments its head and the bad chunk came in."""

import json
import socket
import time

import pytest

from engine_process import start_engine

_HEAD = (
    b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_BAD_CHUNK = b'5\r\n{"pro\r\nPRIVATE-WORDS\r\n0\r\n\r\n'
# tries of a head and its bad chunk in two segments, close together: the chunk came, now and then, after aiohttp had
# taken the request from its queue and before its handler ran, and the request waited 30 s for its 408
_TRIES = 100


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("bad-chunks"), "--time-scale", "0.01", backend="sim")
    yield engine
    assert engine.stop() == 0


def rejected(engine) -> float:
    return engine.metric("argus_requests_total", outcome="rejected", code="malformed_request")


def answer(engine, *segments: bytes, pause_s: float = 0) -> tuple[bytes, dict]:
    """Sends each segment apart (no Nagle: one write, one segment; `pause_s` between them) and reads the reply to the
    end; times out in 5 s, well before the 408 a stalled body gets (30 s)."""
    host, port = engine.http.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for segment in segments:
            connection.sendall(segment)
            time.sleep(pause_s)
        head, _, body = b"".join(iter(lambda: connection.recv(65536), b"")).partition(b"\r\n\r\n")
    return head, json.loads(body)["error"]


def assert_refused_as_a_request(head: bytes, error: dict) -> None:
    assert head.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in head, head
    assert error["code"] == "malformed_request" and "Transfer-Encoding: chunked" in error["message"], error


def test_a_bad_chunk_in_its_heads_segment_is_a_request_refused_and_counted(engine):
    """aiohttp's C parser dropped the head it had parsed when the body that came with it failed: the message was
    answered as one it could not parse (HTTP/1.0, other words), and counted in no outcome, where the same bytes in
    two segments were a request answered and counted."""
    before = rejected(engine)
    assert_refused_as_a_request(*answer(engine, _HEAD + _BAD_CHUNK))
    assert rejected(engine) == before + 1


def test_a_bad_chunk_right_after_its_head_is_answered_at_once_every_time(engine):
    """The pauses, 0 to 0.3 ms, have the engine read the head alone, then the chunk at one point or another of its
    taking the request in."""
    before = rejected(engine)
    for pause in range(_TRIES):
        assert_refused_as_a_request(*answer(engine, _HEAD, _BAD_CHUNK, pause_s=pause / _TRIES * 0.0003))
    assert rejected(engine) == before + _TRIES
