"""A request's head (its line and headers) over 64 KiB is answered 431 and its connection closed, through a real
engine and real sockets: aiohttp held an unfinished one, up to 128 headers of 8 KB each, about 2 MB per connection
until the keep-alive timeout. Heads and bodies within the bound, pipelined or chunked, are served as before."""

import json
import logging
import socket
from urllib.parse import urlsplit

import pytest

import engine.http.head_limit as head_limit_module
from engine_process import start_engine
from protocols.limits import MAX_HEAD_BYTES

pytestmark = pytest.mark.timeout(120)

HEADER_BYTES = 8000  # a header line, under aiohttp's 8,190


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("head-limit"), "--time-scale", "0", workers=1, backend="sim")
    yield engine
    assert engine.stop() == 0


def connect(engine) -> socket.socket:
    address = urlsplit(engine.http)
    # well within the engine's --keepalive-timeout (75 s), which closed an unfinished head before the bound
    return socket.create_connection((address.hostname, address.port), timeout=20)


def head(headers: int, path: str = "/health") -> bytes:
    """A GET's head with `headers` headers of HEADER_BYTES, not ended (no blank line)."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"X-Filler-{n}: {'v' * (HEADER_BYTES - 14)}" for n in range(headers)]
    return "".join(f"{line}\r\n" for line in lines).encode()


def read_until_closed(sock: socket.socket) -> bytes:
    """What the engine writes until it ends its side (a 431 ends it with the answer)."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def answers(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The answers in `data`, each its status, headers and body (by Content-Length)."""
    found = []
    while data:
        head_bytes, _, data = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode().split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        found.append((int(lines[0].split()[1]), headers, data[:length]))
        data = data[length:]
    return found


def assert_431(answer: tuple[int, dict[str, str], bytes]) -> None:
    """The connection's refusal: closing it, under an id of the engine's."""
    status, headers, body = answer
    assert (status, headers["connection"]) == (431, "close"), answer
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert headers["x-request-id"]


def test_an_unfinished_head_over_the_bound_is_answered_431_and_closed(engine):
    with connect(engine) as sock:
        # never ended, nor the connection: aiohttp held it until the keep-alive timeout
        sock.sendall(head(MAX_HEAD_BYTES // HEADER_BYTES + 2))
        (answer,) = answers(read_until_closed(sock))
    assert_431(answer)
    assert engine.get("/health")[0] == 200


def test_a_whole_head_over_the_bound_is_answered_431_and_closed(engine):
    """Its end within the read that took it past the bound: parsed whole, it is refused as the request it is, and its
    connection closed as every 431's (a GET's was kept, Keep-Alive: timeout=75)."""
    with connect(engine) as sock:
        sock.sendall(head(MAX_HEAD_BYTES // HEADER_BYTES + 1) + b"\r\n")
        (answer,) = answers(read_until_closed(sock))
    assert_431(answer)


def test_a_head_over_the_bound_after_a_request_answered_on_its_connection_is_answered_431(engine):
    with connect(engine) as sock:
        sock.sendall(head(1) + b"\r\n")
        first = b""
        while not first.endswith(b"}"):  # /health's JSON body
            first += sock.recv(65536)
        sock.sendall(head(MAX_HEAD_BYTES // HEADER_BYTES + 2))
        (answer,) = answers(read_until_closed(sock))
    assert answers(first)[0][0] == 200
    assert_431(answer)


def test_heads_and_bodies_within_the_bound_are_served(engine):
    """A head just under the bound; pipelined requests whose bodies, over the bound, come in one write with the next
    request's head; a body in small chunks: each answered by the engine, none 431."""
    within = head(MAX_HEAD_BYTES // HEADER_BYTES - 1) + b"\r\n"
    assert len(within) < MAX_HEAD_BYTES
    body = json.dumps({"prompt": "a heron", "size": "64x64", "filler": "x" * 300_000}).encode()  # a 400: unknown field
    posted = (
        b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[n : n + 100]), body[n : n + 100]) for n in range(0, len(body), 100))
    posted_chunked = (
        b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n"
    )
    with connect(engine) as sock:
        sock.sendall(within + posted + posted + posted_chunked + head(0) + b"Connection: close\r\n\r\n")
        got = answers(read_until_closed(sock))
    assert [status for status, _, _ in got] == [200, 400, 400, 400, 200], got
    assert "filler" in json.loads(got[1][2])["error"]["message"]


def test_a_head_over_the_bound_behind_a_request_not_yet_answered_is_answered_431_after_it(engine):
    """Sent in one write with a request before it (pipelined): the 431 waits for that request's answer, not written
    inside it."""
    with connect(engine) as sock:
        sock.sendall(head(1) + b"\r\n" + head(MAX_HEAD_BYTES // HEADER_BYTES + 2))
        got = answers(read_until_closed(sock))
    assert got[0][0] == 200, got
    assert_431(got[1])


def test_trailer_fields_over_the_bound_after_a_chunked_body_are_not_held(engine):
    """Header fields after a chunked body's last chunk, which aiohttp keeps as it keeps headers: never ended, they
    were held until the body's 408, 30 s on. The request's handler waits for the body's end, so no 431 can be written
    before its answer: the connection is reset."""
    trailers = head(MAX_HEAD_BYTES // HEADER_BYTES + 2).partition(b"\r\n")[2].partition(b"\r\n")[2]  # no line, Host
    posted = (
        b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
    )
    with connect(engine) as sock:
        sock.sendall(posted + trailers)
        try:
            got = read_until_closed(sock)
        except ConnectionResetError:
            got = b""
    assert got == b"", got
    assert engine.get("/health")[0] == 200


def test_an_aiohttp_without_the_state_read_is_served_unbounded_and_said(monkeypatch, caplog):
    # the count reads aiohttp's private RequestHandler state: without it, every keep-alive connection would be refused
    # once 64 KiB had passed on it
    monkeypatch.setattr(head_limit_module, "_AIOHTTP_STATE", (*head_limit_module._AIOHTTP_STATE, "_gone_in_a_release"))

    def aiohttp_protocol():
        raise AssertionError("not made here")

    with caplog.at_level(logging.WARNING, logger="argus.http"):
        assert head_limit_module.head_limit(aiohttp_protocol) is aiohttp_protocol
    assert "_gone_in_a_release" in caplog.text


@pytest.mark.parametrize("chunk_bytes", [4096, 16384])
def test_a_chunked_body_sent_faster_than_it_is_read_is_served(engine, chunk_bytes):
    """A chunked body of 900 KB in one write: aiohttp pauses its parser once 128 KiB of the body wait unread, and keeps
    the rest of a read unparsed (a body's bytes, not a head's). Counted as a head's, the connection was reset with no
    answer."""
    body = json.dumps({"prompt": "a heron", "size": "64x64", "filler": "x" * 900_000}).encode()  # a 400: unknown field
    chunks = (body[n : n + chunk_bytes] for n in range(0, len(body), chunk_bytes))
    posted = (
        b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
        + b"0\r\n\r\n"
    )
    with connect(engine) as sock:
        sock.sendall(posted)
        (answer,) = answers(read_until_closed(sock))
    assert answer[0] == 400, answer
    assert "filler" in json.loads(answer[2])["error"]["message"]
