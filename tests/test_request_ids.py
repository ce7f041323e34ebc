"""Request ids: an HTTP request's X-Request-ID, or one the engine makes, is its id (a ZeroMQ Generate's request_id),
said on every reply and in the engine's log lines about the request, for both doors alike."""

import asyncio
import itertools
import logging
import uuid

import aiohttp
import pytest
from test_http_app import connect_when_listening
from waiting import eventually

from engine.client import AsyncArgusClient
from engine.config import DispatchConfig
from engine.http.request_ids import header_problem, request_ids
from engine.server import Engine
from engine_process import free_port, in_process_config
from protocols.client_messages import Busy, Generate
from protocols.limits import MAX_REQUEST_ID_CHARS


def test_ids_share_one_random_prefix_and_never_repeat(monkeypatch):
    draws = []
    real = uuid.uuid4
    monkeypatch.setattr(uuid, "uuid4", lambda: draws.append(1) or real())
    ids = list(itertools.islice(request_ids(), 1000))
    assert len(set(ids)) == 1000
    assert len({i.rsplit("-", 1)[0] for i in ids}) == 1
    assert len(draws) == 1


def test_an_id_of_the_longest_length_is_taken_and_one_past_it_refused():
    assert header_problem(["a" * MAX_REQUEST_ID_CHARS]) is None
    assert "129 characters long" in header_problem(["a" * (MAX_REQUEST_ID_CHARS + 1)])


@pytest.fixture
async def engine(tmp_path):
    """An engine with no worker and room for one image: a request is held, the next one refused."""
    port = free_port()
    engine = Engine(in_process_config(tmp_path, port=port, dispatch=DispatchConfig(max_queue=1)))
    running = asyncio.create_task(engine.run())
    await connect_when_listening(port)
    engine.url = f"http://127.0.0.1:{port}"
    yield engine
    engine.request_stop()
    await asyncio.wait_for(running, 30)


async def test_an_id_sent_is_said_back_and_one_not_sent_is_made(engine):
    async with aiohttp.ClientSession() as session:
        async with session.get(engine.url + "/health", headers={"X-Request-ID": "trace-7f3a/1 2"}) as response:
            assert response.status == 200 and response.headers["X-Request-ID"] == "trace-7f3a/1 2"
        made = []
        for _ in range(2):
            async with session.get(engine.url + "/v1/nothing") as response:  # errors say theirs too
                assert response.status == 404
                made.append(response.headers["X-Request-ID"])
        assert made[0] != made[1] and made[0].rsplit("-", 1)[0] == made[1].rsplit("-", 1)[0]


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ([("X-Request-ID", "a" * 129)], "is 129 characters long"),
        ([("X-Request-ID", "")], "is empty"),
        ([("X-Request-ID", "caf\u00e9")], "holds 'é' at position 3, which is not printable ASCII"),
        ([("X-Request-ID", "a\tb")], "holds '\\t' at position 1"),
        ([("X-Request-ID", "a"), ("X-Request-ID", "b")], "is sent 2 times"),
    ],
)
async def test_an_id_that_is_none_is_a_400_saying_why_under_an_id_of_the_engines(engine, headers, why):
    async with aiohttp.ClientSession() as session:
        body = {"prompt": "a fox", "size": "64x64"}
        async with session.post(engine.url + "/v1/images/generations", json=body, headers=headers) as response:
            error = (await response.json())["error"]
            assert response.status == 400 and error["code"] == "invalid_request", error
            assert why in error["message"] and "1 to 128 printable ASCII characters" in error["message"], error
            assert response.headers["X-Request-ID"] not in {value for _, value in headers}
        # probes are answered whatever a proxy on their way adds, under an id of the engine's (/ready: 503, no worker)
        for path, status in (("/health", 200), ("/ready", 503)):
            async with session.get(engine.url + path, headers=headers) as response:
                assert response.status == status and response.headers["X-Request-ID"] not in {v for _, v in headers}
        async with session.get(engine.url + "/plan", headers=headers) as response:
            assert response.status == 400 and why in (await response.json())["error"]["message"]
    assert engine.dispatcher.outstanding_images == 0
    # counted as a refused request, as a body that is none is; the 400 on /plan is no image request
    sample = engine.metrics.registry.get_sample_value
    assert sample("argus_requests_total", {"outcome": "rejected", "code": "invalid_request"}) == 1


async def test_a_path_or_method_not_served_is_its_404_or_405_whatever_the_id(engine):
    """The router's refusal is the more basic error, and a request it refuses is not served: it was a 400 about the
    header, but for a probe's path. Answered under an id of the engine's, as a probe is."""
    headers = {"X-Request-ID": ""}
    async with aiohttp.ClientSession() as session:
        for method, path, status, allow in (
            ("DELETE", "/v1/images/generations", 405, "POST"),
            ("PUT", "/v1/models", 405, "GET,HEAD"),
            ("POST", "/plan", 405, "GET,HEAD"),
            ("GET", "/v1/images/edits", 404, None),
        ):
            async with session.request(method, engine.url + path, headers=headers) as response:
                error = (await response.json())["error"]
                assert (response.status, response.headers.get("Allow")) == (status, allow), (method, path, error)
                assert response.headers["X-Request-ID"], (method, path)
    sample = engine.metrics.registry.get_sample_value
    assert sample("argus_requests_total", {"outcome": "rejected", "code": "invalid_request"}) == 0


async def test_the_engine_logs_a_request_refused_or_timed_out_by_its_id_over_either_door(engine, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="argus.requests")
    async with aiohttp.ClientSession() as session:

        async def post(request_id: str, **fields) -> aiohttp.ClientResponse:
            body = {"prompt": "a fox", "size": "64x64", **fields}
            headers = {"X-Request-ID": request_id}
            async with session.post(engine.url + "/v1/images/generations", json=body, headers=headers) as response:
                await response.read()
                return response

        # no worker: it waits for one until its deadline, holding the queue's one place
        held = asyncio.create_task(post("http-held", slo_ms=2000))
        assert await eventually(lambda: engine.dispatcher.outstanding_images == 1)
        assert (await post("http-shed")).status == 429
        async with AsyncArgusClient(f"ipc://{tmp_path}/clients") as client:
            assert isinstance(await client.generate("a fox", request_id="zmq-shed"), Busy)
        timed_out = await asyncio.wait_for(held, 30)
        assert timed_out.status == 504 and timed_out.headers["X-Request-ID"] == "http-held"
    said = [r.getMessage() for r in caplog.records if r.name == "argus.requests"]
    assert any(line.startswith("request 'http-shed' refused busy (queue_full): retry after ") for line in said), said
    assert any(line.startswith("request 'zmq-shed' refused busy (queue_full)") for line in said), said
    assert any(line.startswith("request 'http-held' answered deadline_exceeded after ") for line in said), said


async def test_a_request_a_front_door_refuses_is_logged_by_its_id_as_one_refused_at_admission(engine, tmp_path, caplog):
    """A body or message that is no request, refused before the engine saw it, and one refused as the engine stops,
    were counted but said in no line at any level: DEBUG showed a client's 429s and 504s, and none of its 400s."""
    caplog.set_level(logging.DEBUG, logger="argus.requests")
    async with aiohttp.ClientSession() as session:
        for request_id, body, content_type in (
            ("http-field", b'{"prompt": "a fox", "n": 0}', "application/json"),
            ("http-typed", b'{"prompt": "a fox"}', "text/plain"),
            ("http-large", b'{"prompt": "' + b"x" * 2_000_000 + b'"}', "application/json"),
        ):
            headers = {"X-Request-ID": request_id, "Content-Type": content_type}
            async with session.post(engine.url + "/v1/images/generations", data=body, headers=headers) as response:
                assert response.status in (400, 413, 415)
        # an id that is none: refused under one of the engine's, the one its reply says
        headers = {"X-Request-ID": "a" * (MAX_REQUEST_ID_CHARS + 1)}
        async with session.post(
            engine.url + "/v1/images/generations", json={"prompt": "a fox"}, headers=headers
        ) as sent:
            assert sent.status == 400
            made = sent.headers["X-Request-ID"]
    async with AsyncArgusClient(f"ipc://{tmp_path}/clients") as client:
        assert (await client.generate("a fox", n=0, request_id="zmq-field")).code == "invalid_request"
    engine.request_stop()
    assert engine.submit(Generate("late", "a fox")).code == "shutting_down"
    said = [r.getMessage() for r in caplog.records if r.name == "argus.requests"]
    for request_id, code in (
        ("http-field", "invalid_request"),
        ("http-typed", "unsupported_media_type"),
        ("http-large", "body_too_large"),
        (made, "invalid_request"),
        ("zmq-field", "invalid_request"),
        ("late", "shutting_down"),
    ):
        assert any(line.startswith(f"request {request_id!r} refused {code}: ") for line in said), (request_id, said)
