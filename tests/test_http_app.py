"""The HTTP app: its own failures; a body that stops coming; connections slow to send; a large body read off the loop.
(Request ids: tests/test_request_ids.py.)"""

import asyncio
import json
import threading
from types import SimpleNamespace

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from engine import server
from engine.config import EngineConfig
from engine.http import api as http_api
from engine.http.api import build_app
from engine.http.parse_errors import json_parse_errors
from engine.metrics import EngineMetrics
from engine.server import Engine
from engine_process import connect_when_listening, free_port, in_process_config

LINGER_1_S = {"lingering_time": 1.0}


async def test_a_failure_inside_the_engine_is_a_json_500_in_the_api_error_shape():
    engine = SimpleNamespace(
        config=EngineConfig(max_body_bytes=1024), api_keys=None, metrics=EngineMetrics(), running=True
    )
    app = build_app(engine, loopback=True)

    async def broken(request):
        raise RuntimeError("a defect")

    app.router.add_get("/broken", broken)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.get("/broken")
        assert response.status == 500
        assert response.content_type == "application/json"
        assert (await response.json())["error"]["code"] == "internal_error"
        assert (await client.get("/broken")).status == 500  # and it goes on answering


async def test_a_body_that_stops_coming_is_a_408_that_closes_the_connection(tmp_path, monkeypatch):
    """aiohttp waited for the rest of a body for ever (50 uploads stalled mid-body on a real engine: none answered
    after 120 s), holding the connection, where it drops one idle or still sending headers after its keep-alive
    timeout."""
    monkeypatch.setattr(http_api, "BODY_READ_S", 0.5)
    # the 408 is answered at once; aiohttp then reads on for the rest of the body for up to its lingering_time (10 s)
    # before it closes: 1 s here, the wait the read to the end below spent most of this test in. Given to the protocol
    # the engine makes with its runner's handler arguments (engine/http/parse_errors.py), not to the runner: one given
    # to the runner alone was never used, and the test waited the 10 s
    monkeypatch.setattr(server, "json_parse_errors", lambda runs, args: json_parse_errors(runs, args | LINGER_1_S))
    port = free_port()
    engine = Engine(in_process_config(tmp_path, port=port))
    running = asyncio.create_task(engine.run())
    try:
        reader, writer = await connect_when_listening(port)
        writer.write(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 40\r\n\r\n{"prompt": '
        )
        reply = await asyncio.wait_for(reader.read(), 30)  # to the end: the engine closes the connection
        writer.close()
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ")
        assert json.loads(body)["error"]["code"] == "request_timeout"
        samples = {"outcome": "rejected", "code": "request_timeout"}
        assert engine.metrics.registry.get_sample_value("argus_requests_total", samples) == 1
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 30)


async def test_a_client_still_sending_its_body_after_the_408_reads_it_and_is_not_reset(tmp_path, monkeypatch):
    """Closed at once, with what the client sent after unread, the connection is reset: the client's next write fails
    (a broken pipe, a reset) and a client that reads only once it is done sending, as most do, never reads the 408;
    a reset overtaking the 408 on its way destroys it. aiohttp reads on and drops the rest of the body for up to 10 s
    (its lingering_time) and closes once it has come: each write here succeeds, and the end comes after the 408."""
    monkeypatch.setattr(http_api, "BODY_READ_S", 0.5)
    port = free_port()
    engine = Engine(in_process_config(tmp_path, port=port))
    running = asyncio.create_task(engine.run())
    body = b'{"prompt": "a lighthouse", "size": "64x64"}'
    try:
        reader, writer = await connect_when_listening(port)
        writer.write(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:1]
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 408 ")
        for byte in body[1:]:
            writer.write(bytes([byte]))
            await writer.drain()  # raises once the engine's reset has come
            await asyncio.sleep(0.01)  # time for a reset to come back
        answer = await asyncio.wait_for(reader.read(), 30)  # to the end: closed once the body came, not reset
        assert json.loads(answer)["error"]["code"] == "request_timeout"
        writer.close()
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 30)


async def closed_within_30_s(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bytes = b"") -> bool:
    """Whether the engine closes the connection within 30 s, while `trickle` is written to it a byte every 0.1 s."""
    loop = asyncio.get_running_loop()
    deadline, pending = loop.time() + 30, iter(trickle)
    while loop.time() < deadline:
        try:
            if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                return True
        except TimeoutError:
            pass
        except ConnectionError:
            return True
        byte = next(pending, None)
        if byte is not None:
            writer.write(bytes([byte]))
    return False


async def test_a_connection_slow_to_send_its_headers_or_idle_is_closed_after_the_keepalive_timeout(tmp_path):
    """aiohttp's default of 3630 s held a connection that trickled its headers a byte every half second, and one idle
    after a request, for over 200 s (each, for an hour). A client that sends its requests in time keeps its
    connection."""
    port = free_port()
    engine = Engine(in_process_config(tmp_path, port=port, keepalive_timeout_s=1.0))
    running = asyncio.create_task(engine.run())
    try:
        slow = await connect_when_listening(port)
        idle = await connect_when_listening(port)
        for _ in range(3):  # keep-alive: one connection, request after request
            idle[1].write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await asyncio.wait_for(idle[0].readuntil(b"\r\n\r\n"), 30)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await asyncio.wait_for(idle[0].readexactly(length), 30)
        assert await closed_within_30_s(*slow, b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 1000)
        assert await closed_within_30_s(*idle)
    finally:
        for _, writer in (slow, idle):
            writer.close()
        engine.request_stop()
        await asyncio.wait_for(running, 30)


async def test_a_large_body_is_read_on_a_thread_not_the_event_loop(tmp_path, monkeypatch):
    """A 1 MiB body (the most the engine takes) of 150,000 fields took the loop 33 ms to refuse, every other request
    waiting."""
    parsed_on = []
    real = http_api.parse_request
    monkeypatch.setattr(
        http_api, "parse_request", lambda raw: parsed_on.append(threading.current_thread()) or real(raw)
    )
    port = free_port()
    engine = Engine(in_process_config(tmp_path, port=port))
    running = asyncio.create_task(engine.run())
    try:
        await connect_when_listening(port)
        bodies = [b'{"prompt": "a fox", "prompt": "a hen"}', b"{" + b",".join([b'"n": 1'] * 120_000) + b"}"]
        async with aiohttp.ClientSession() as session:
            for body in bodies:
                headers = {"Content-Type": "application/json"}
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/images/generations", data=body, headers=headers
                ) as response:
                    assert response.status == 400
                    assert "duplicate field" in (await response.json())["error"]["message"]
        assert parsed_on[0] is threading.current_thread()  # the loop's: a usual body is read where it came
        assert parsed_on[1] is not threading.current_thread()
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 30)
