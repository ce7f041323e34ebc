"""Request bodies being read are held to BODY_BUDGET_BYTES together, through a real engine and real sockets: past it,
a body is refused 503 too_many_bodies, its connection closed, where every connection could hold a body of 1 MiB for
the 30 s the engine waits for the rest of it (23 GB at the default --max-connections)."""

import json
import socket
from contextlib import ExitStack
from urllib.parse import urlsplit

import pytest
from waiting import wait_for

from engine_process import start_engine
from protocols.limits import BODY_BUDGET_BYTES

pytestmark = pytest.mark.timeout(180)

BODY_LIMIT = 1024 * 1024  # the engine's limit on one body (EngineConfig.max_body_bytes)


def connect(engine) -> socket.socket:
    address = urlsplit(engine.http)
    return socket.create_connection((address.hostname, address.port), timeout=30)


def post_head(length: int) -> bytes:
    return (
        b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


def answer_to_small_body(engine) -> tuple[bytes, dict]:
    """The head and JSON body of the engine's answer to a body of a few hundred bytes (a 400 when it is read)."""
    body = json.dumps({"prompt": "a heron", "filler": "x" * 300}).encode()
    with connect(engine) as sock:
        sock.sendall(post_head(len(body)) + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            head, _, rest = answer.partition(b"\r\n\r\n")
            length = next((int(line[15:]) for line in head.split(b"\r\n") if line.startswith(b"Content-Length: ")), -1)
            if len(rest) == length:
                return head, json.loads(rest)
    raise AssertionError(f"no whole answer: {answer!r}")


def test_bodies_past_the_budget_are_refused_503_until_those_read_are_done(tmp_path):
    engine = start_engine(tmp_path, "--time-scale", "0", workers=1, backend="sim")
    try:
        with ExitStack() as held:
            # bodies short of their last byte: the engine holds each while it waits for the rest
            for _ in range(BODY_BUDGET_BYTES // BODY_LIMIT):
                sock = held.enter_context(connect(engine))
                sock.sendall(post_head(BODY_LIMIT) + b" " * (BODY_LIMIT - 1))
            refused = []
            # once the engine has read them, the budget has a few hundred bytes left
            assert wait_for(lambda: refused.append(answer_to_small_body(engine)) or b" 503 " in refused[-1][0])
            head, body = refused[-1]
            assert body["error"]["code"] == "too_many_bodies", body
            assert b"Retry-After: 1" in head and b"Connection: close" in head, head
        # the held bodies' connections closed, their bytes are given back
        assert wait_for(lambda: b" 400 " in answer_to_small_body(engine)[0])
    finally:
        assert engine.stop() == 0
