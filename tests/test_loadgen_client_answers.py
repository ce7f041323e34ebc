"""What each load client sends for a request and how it reads each kind of answer into a record: HTTP against an
in-process stand-in for the engine's door, ZeroMQ against a stand-in for AsyncArgusClient."""

import asyncio
import contextlib
import errno
import json
import re

import aiohttp
import pytest
import zmq
from aiohttp import web
from stand_in_http import served

from engine.client import ClientClosed
from engine_process import free_port
from loadgen.clients import CLIENT_OUT_OF_FILES, HttpLoadClient, LoadClient, Planned, RequestOptions, ZmqLoadClient
from loadgen.records import Answer, ImageMeta
from loadgen.stale_retry import pooled_session
from protocols.client_messages import Busy, Cancelled, Error, ImageResult, Images
from protocols.codec import Blob

PROMPT = "a red fox"
ARGUS = {"level": 15, "similarity": 0.91, "quality": 93.5, "queue_ms": 4.0, "run_ms": 800.0, "worker": "w0",
         "simulated": True, "estimated_quality": 94.0}  # fmt: skip


@contextlib.asynccontextmanager
async def http_door(status: int, body: bytes):
    """Answers every request with `status` and `body`; yields its base URL and the requests it saw."""
    seen: list[tuple[str, str | None, dict]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("Authorization"), await request.json()))
        return web.Response(body=body, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{path:.*}", answer)
    async with served(app) as url:
        yield url, seen


DEFAULTS = RequestOptions()


async def http_request(status: int, body: bytes, options=DEFAULTS, *, seed=None, slo_ms=None, **client):
    async with http_door(status, body) as (url, seen):
        http = HttpLoadClient(url + "/", options, **client)  # a base URL as typed, with its slash
        try:
            record = await http.request(Planned(0, 0, PROMPT, 0.0, seed), 0.0, slo_ms)
        finally:
            await http.close()
    return record, seen


async def test_an_http_request_asks_for_one_image_of_the_size_seed_steps_and_slo_given():
    body = json.dumps({"data": [{"b64_json": "", "argus": ARGUS}]}).encode()
    record, seen = await http_request(200, body, RequestOptions(64, 128, steps=4), seed=0, slo_ms=900.0, api_key="k")
    wanted = {"prompt": PROMPT, "n": 1, "size": "64x128", "seed": 0, "num_inference_steps": 4, "slo_ms": 900.0}
    assert seen == [("/v1/images/generations", "Bearer k", wanted)]
    assert record["outcome"] == "ok" and record["status"] == 200 and record["n_images"] == 1
    assert {name: record[name] for name in ARGUS} == ARGUS


async def test_an_http_request_without_options_leaves_them_to_the_engine():
    _, seen = await http_request(200, b'{"data": []}')
    assert seen == [("/v1/images/generations", None, {"prompt": PROMPT, "n": 1, "size": "auto"})]


@pytest.mark.parametrize(
    ("status", "body", "outcome", "code"),
    [
        (429, b'{"error": {"code": "busy", "message": "full"}}', "rejected", "busy"),
        (503, b'{"error": {"code": "cancelled", "message": "stopped"}}', "cancelled", "cancelled"),
        (504, b'{"error": {"code": "deadline_exceeded", "message": "late"}}', "deadline_exceeded", "deadline_exceeded"),
        (502, b"<html>bad gateway</html>", "error", "http_502"),
        (200, b'{"images": []}', "error", "bad_response"),
        # a request asks for one image: it was counted ok, an image served, in the throughput and goodput
        (200, b'{"data": []}', "error", "bad_response"),
    ],
    ids=["busy", "cancelled", "deadline", "not-the-engine", "bad-images", "no-image"],
)
async def test_an_http_answer_other_than_images_is_recorded_by_its_code(status, body, outcome, code):
    record, _ = await http_request(status, body)
    assert (record["outcome"], record["code"], record["status"]) == (outcome, code, status)


@pytest.mark.parametrize(
    ("failure", "code"),
    [(errno.EMFILE, CLIENT_OUT_OF_FILES), (errno.ENFILE, CLIENT_OUT_OF_FILES), (errno.ECONNRESET, "connection_error")],
    ids=["process-out-of-files", "system-out-of-files", "reset"],
)
async def test_a_send_that_fails_for_want_of_descriptors_is_the_clients_failure(monkeypatch, failure, code):
    def fail(*args, **kwargs):
        raise OSError(failure, "failed")

    monkeypatch.setattr(aiohttp.ClientSession, "post", fail)
    http = HttpLoadClient(f"http://127.0.0.1:{free_port()}")
    try:
        record = await http.request(Planned(0, 0, PROMPT, 0.0, None), 0.0, None)
    finally:
        await http.close()
    assert (record["outcome"], record["code"]) == ("error", code)


@contextlib.asynccontextmanager
async def door_closing_connections(answered: int):
    """Answers the first `answered` requests on each connection with images, keeping it open, then resets it on the
    next one unanswered: a server that closed the connection as idle just as the client sent that request on it (the
    race at --keepalive-timeout, made certain). Yields its base URL and the connections it took."""
    connections: list[asyncio.StreamWriter] = []
    images = json.dumps({"data": [{"b64_json": "", "argus": ARGUS}]}).encode()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        for _ in range(answered):
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(re.search(rb"(?i)content-length: *(\d+)", head)[1]))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(images), images))
        await reader.read(1)  # the next request's first bytes, never read whole
        writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections
    finally:
        server.close()


async def test_a_request_on_a_pooled_connection_the_server_closed_as_idle_is_sent_again_on_a_new_one():
    """It failed before any answer, the server having read none of it, and was counted a connection_error of the
    engine's: 41 and 72 of 400 POSTs sent within 30 ms of an engine's 3 s --keepalive-timeout."""
    async with door_closing_connections(answered=1) as (url, connections):
        http = HttpLoadClient(url)
        try:
            first = await http.request(Planned(0, 0, PROMPT, 0.0, None), 0.0, None)
            second = await http.request(Planned(1, 0, PROMPT, 0.0, None), 0.0, None)
        finally:
            await http.close()
    assert (first["outcome"], second["outcome"], second["code"]) == ("ok", "ok", None), second
    assert len(connections) == 2


async def test_a_request_that_fails_on_a_new_connection_is_not_sent_again():
    """That is the engine's failure (it may have taken the request): recorded, not hidden by a second send."""
    async with door_closing_connections(answered=0) as (url, connections):
        http = HttpLoadClient(url)
        try:
            record = await http.request(Planned(0, 0, PROMPT, 0.0, None), 0.0, None)
        finally:
            await http.close()
    assert (record["outcome"], record["code"]) == ("error", "connection_error")
    assert len(connections) == 1


async def test_a_pooled_session_serves_requests_not_sent_by_its_post_on_reused_connections():
    """Its trace of a connection reused marked each request's own _Sent: a request sent otherwise had none, and failed
    with an AttributeError once it went on a connection from the pool."""
    async with http_door(200, b"{}") as (url, seen):
        async with pooled_session() as session:
            for _ in range(2):  # the second on the first's connection, from the pool
                async with session.post(url, json={}) as response:
                    assert response.status == 200
    assert len(seen) == 2


class _StandInArgus:
    """AsyncArgusClient's generate, answered from a script."""

    def __init__(self, address: str, curve=None):
        self.sent: list[tuple[str, dict]] = []
        self.replies: list = []

    async def generate(self, prompt: str, **fields):
        self.sent.append((prompt, fields))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def close(self) -> None:
        pass


@pytest.fixture
def zmq_client(monkeypatch):
    monkeypatch.setattr("loadgen.clients.AsyncArgusClient", _StandInArgus)
    return ZmqLoadClient("tcp://127.0.0.1:1", RequestOptions(64, 128))


async def zmq_record(client: ZmqLoadClient, reply, slo_ms=None):
    client._client.replies.append(reply)
    return await client.request(Planned(0, 0, PROMPT, 0.0, 7), 0.0, slo_ms)


async def test_a_zmq_request_asks_for_the_size_seed_and_slo_given(zmq_client):
    image = ImageResult(Blob(b""), 7, ARGUS["level"], ARGUS["similarity"], ARGUS["queue_ms"], ARGUS["run_ms"],
                        35, ARGUS["worker"], ARGUS["quality"], True, ARGUS["estimated_quality"])  # fmt: skip
    record = await zmq_record(zmq_client, Images("r", [image]), slo_ms=900.0)
    assert zmq_client._client.sent == [(PROMPT, {"width": 64, "height": 128, "steps": 0, "seed": 7, "slo_ms": 900.0})]
    assert record["outcome"] == "ok" and record["status"] is None and record["n_images"] == 1
    assert {name: record[name] for name in ARGUS} == ARGUS


@pytest.mark.parametrize(
    ("reply", "outcome", "code"),
    [
        (Busy("r", 100), "rejected", "busy"),
        (Cancelled("r"), "cancelled", "cancelled"),
        (Error("r", "deadline_exceeded", "late"), "deadline_exceeded", "deadline_exceeded"),
        (Error("r", "no_worker", "none"), "error", "no_worker"),
        (zmq.ZMQError(errno.EHOSTUNREACH), "error", "connection_error"),
        (ClientClosed("closed"), "error", "connection_error"),
        (Images("r", []), "error", "bad_response"),
    ],
    ids=["busy", "cancelled", "deadline", "no-worker", "zmq-error", "closed", "no-image"],
)
async def test_a_zmq_answer_other_than_images_is_recorded_by_its_code(zmq_client, reply, outcome, code):
    record = await zmq_record(zmq_client, reply)
    assert (record["outcome"], record["code"], record["status"]) == (outcome, code, None)


class _AnsweringAtOnce(LoadClient):
    async def _exchange(self, prompt, seed, slo_ms) -> Answer:
        return Answer("images", images=[ImageMeta(0, None, 100.0, 1.0, 1.0, "w")])

    async def close(self) -> None:
        pass


async def test_a_record_says_its_send_from_the_runs_start_and_its_latency_from_the_send(monkeypatch):
    ticks = [12.5, 12.75]  # the send, then the answer
    monkeypatch.setattr("loadgen.clients.time.perf_counter", lambda: ticks.pop(0) if ticks else 13.0)
    record = await _AnsweringAtOnce(RequestOptions()).request(Planned(3, 1, PROMPT, 2.0, None), 10.0, None)
    assert (record["id"], record["prompt_index"], record["scheduled_at"]) == (3, 1, 2.0)
    assert (record["sent_at"], record["latency_ms"]) == (2.5, 250.0)
