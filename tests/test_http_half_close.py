"""A client that half-closes its connection once its request is sent (shutdown(SHUT_WR), as `nc -N` does) gets its
answer; one that goes away for good still has its request cancelled (a plain close: tests/test_cancellation.py)."""

import asyncio
import http.client
import io
import json
import socket
import struct
import time

import pytest
from aiohttp import web
from waiting import wait_for

from engine.http.half_close import PROBE, answer_half_closed, half_close_aware
from engine_process import start_engine


@pytest.fixture(scope="module")
def file_engine(tmp_path_factory):
    # one sim worker taking about 5 s an image: a client gone is found long before its image is made
    engine = start_engine(
        tmp_path_factory.mktemp("half-close"), "--time-scale", "1", "--max-batch", "1", workers=1, backend="sim"
    )
    yield engine
    assert engine.stop() == 0


@pytest.fixture
def engine(file_engine):
    """The file's engine, once what an earlier test asked of it is answered."""
    assert wait_for(file_engine.idle, timeout_s=60)
    return file_engine


# the steps of an image a test waits for: about 1 s on the file's engine, where the default 50 take 5 s; the end of
# the client's input still comes long before it is made
STEPS_WAITED_FOR = 5


def generation_request(prompt: str, version: str = "HTTP/1.1", steps: int | None = None) -> bytes:
    """Each test asks for a prompt of its own: an image an earlier one made would be a cache hit, made in less time.
    `steps`: the engine's default unless given."""
    fields = {"prompt": prompt, "size": "64x64"} | ({} if steps is None else {"num_inference_steps": steps})
    body = json.dumps(fields).encode()
    head = f"POST /v1/images/generations {version}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def connect(engine) -> socket.socket:
    host, port = engine.http.removeprefix("http://").split(":")
    # below the 30 s a body is waited for and the 75 s keep-alive timeout: the engine must close before either
    return socket.create_connection((host, int(port)), timeout=20)


def read_to_end(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


class _Received:
    """What a socket received, for http.client to parse as it parses a live response."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


def outcomes(engine) -> dict[str, float]:
    return {outcome: engine.metric("argus_requests_total", outcome=outcome, code="") for outcome in ("ok", "cancelled")}


def outcomes_since(engine, before: dict[str, float]) -> dict[str, float]:
    return {outcome: count - before[outcome] for outcome, count in outcomes(engine).items()}


def wait_cancelled(engine, before: dict[str, float]) -> None:
    wait_for(lambda: outcomes_since(engine, before)["cancelled"] >= 1)


def test_a_client_that_half_closes_after_its_request_gets_its_images(engine):
    """aiohttp took the end of the client's input for its loss: the request was cancelled and nothing written."""
    before, made = outcomes(engine), engine.metric("argus_images_total", level="0")
    with connect(engine) as client:
        client.sendall(generation_request("a lighthouse", steps=STEPS_WAITED_FOR))
        client.shutdown(socket.SHUT_WR)
        received = read_to_end(client)  # the engine closes the connection after the response
    # the interim answers that found the client still there, then the response, which any HTTP/1.1 client reads
    assert received.startswith(PROBE), received[:200]
    response = http.client.HTTPResponse(_Received(received))
    response.begin()
    assert response.status == 200
    assert len(json.loads(response.read())["data"]) == 1
    assert outcomes_since(engine, before) == {"ok": 1, "cancelled": 0}
    assert engine.metric("argus_images_total", level="0") == made + 1


HEALTH_REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.mark.parametrize("first", ["images", "health"])
def test_a_client_that_sends_requests_back_to_back_then_half_closes_gets_every_answer(engine, first):
    """HTTP/1.1 lets a client send its next request without waiting for the last one's answer (pipelining): the
    connection was closed after the first answer, and the requests read after it were left unanswered. The end of
    input comes while the images are made, or, after /health, between two requests."""
    before = outcomes(engine)
    with connect(engine) as client:
        images = generation_request(f"a harbour in fog, {first}", steps=STEPS_WAITED_FOR)
        sent = images if first == "images" else HEALTH_REQUEST
        client.sendall(sent + HEALTH_REQUEST * 2)
        client.shutdown(socket.SHUT_WR)
        received = read_to_end(client)
    read = [(status, json.loads(body)) for status, body in answers(received)]
    assert [status for status, _ in read] == [200, 200, 200]
    assert [body["status"] for _, body in read[1:]] == ["alive", "alive"]
    assert outcomes_since(engine, before) == {"ok": 1 if first == "images" else 0, "cancelled": 0}


class _Answers(io.BytesIO):
    """Responses one after another, as a socket gives them: http.client closes what it reads one from."""

    def close(self) -> None:
        pass

    def makefile(self, mode: str) -> io.BytesIO:
        return self


def answers(received: bytes) -> list[tuple[int, bytes]]:
    """The status and body of each response in `received`, read as an HTTP/1.1 client reads them (the interim
    answers skipped)."""
    stream, read = _Answers(received), []
    while stream.tell() < len(received):
        response = http.client.HTTPResponse(stream)  # type: ignore[arg-type]
        response.begin()
        read.append((response.status, response.read()))
    return read


def half_close_then_close(client: socket.socket) -> None:
    client.shutdown(socket.SHUT_WR)
    time.sleep(1.0)  # taken for a client still reading meanwhile
    client.close()


def reset(client: socket.socket) -> None:
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


@pytest.mark.parametrize("go_away", [half_close_then_close, reset])
def test_a_client_gone_while_its_images_run_has_them_cancelled(engine, go_away):
    """A close sends the FIN a half-close sends: the engine finds the client gone when a write to it fails."""
    before, made = outcomes(engine), engine.metric("argus_images_total", level="0")
    client = connect(engine)
    client.sendall(generation_request(f"a windmill at dusk, {go_away.__name__}"))
    assert wait_for(lambda: engine.metric("argus_running_images") == 1)
    go_away(client)
    wait_cancelled(engine, before)
    assert outcomes_since(engine, before) == {"ok": 0, "cancelled": 1}
    assert engine.metric("argus_images_total", level="0") == made


def test_an_http_1_0_client_that_half_closes_is_taken_for_gone(engine):
    """HTTP/1.0 forbids the interim answer that tells a client reading from one gone (docs/reliability.md)."""
    before = outcomes(engine)
    with connect(engine) as client:
        client.sendall(generation_request("an orchard in frost", "HTTP/1.0"))
        client.shutdown(socket.SHUT_WR)
        assert read_to_end(client) == b""
    wait_cancelled(engine, before)
    assert outcomes_since(engine, before) == {"ok": 0, "cancelled": 1}


def test_an_idle_connection_its_client_half_closes_is_closed(engine):
    """The engine keeps a connection open past the end of its input only while it owes an answer on it."""
    with connect(engine) as client:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        response = http.client.HTTPResponse(client)
        response.begin()
        assert response.status == 200
        response.read()
        client.shutdown(socket.SHUT_WR)
        assert read_to_end(client) == b""


@pytest.mark.parametrize("after", ["nothing", "health", "images"])
def test_a_request_cut_short_by_a_half_close_is_dropped(engine, after):
    """Closed as before: the rest of the body cannot come (not answered 408 when its read times out). So after
    requests sent back to back before it, once they are answered: after images, whose run the end of input came in,
    the engine waited the body's 30 s for it, holding the connection, then answered 408."""
    before = outcomes(engine)
    timed_out = engine.metric("argus_requests_total", outcome="rejected", code="request_timeout")
    sent = {"nothing": b"", "health": HEALTH_REQUEST, "images": generation_request("a quay at noon", steps=1)}[after]
    with connect(engine) as client:
        client.sendall(sent + b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        client.sendall(b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prompt": ')
        client.shutdown(socket.SHUT_WR)
        received = read_to_end(client)
    assert [status for status, _ in answers(received)] == ([] if after == "nothing" else [200])
    assert engine.metric("argus_requests_total", outcome="rejected", code="request_timeout") == timed_out
    assert outcomes_since(engine, before) == {"ok": 1 if after == "images" else 0, "cancelled": 0}


async def test_a_request_and_the_end_of_input_read_at_once_are_answered():
    """uvloop hands a read's bytes and the end of input in one callback when the read fills its buffer, before
    aiohttp (Python 3.11) has started the request's handler. Here, in this process, with a real transport."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response(text="made")

    app = web.Application(middlewares=[answer_half_closed])
    app.router.add_post("/", slow)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    ours, theirs = socket.socketpair()
    try:
        loop = asyncio.get_running_loop()
        _, connection = await loop.connect_accepted_socket(half_close_aware(runner.server), ours)

        def read_at_once() -> None:
            connection.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            connection.eof_received()

        loop.call_soon(read_at_once)
        theirs.setblocking(False)
        received = b""
        async with asyncio.timeout(20):
            while chunk := await loop.sock_recv(theirs, 65536):
                received += chunk
    finally:
        theirs.close()
        await runner.cleanup()
    assert received.startswith(PROBE + b"HTTP/1.1 200 OK"), received
    assert received.endswith(b"made")
