"""What the HTTP door answers for each refusal or reply the engine gives a request: its status, the field it names,
when to retry; decided in process with an engine stood in (tests/engine_stand_in.py)."""

import asyncio
import contextlib

import aiohttp
import pytest
from engine_stand_in import StandInEngine, admitted, http_door_of
from waiting import eventually

from protocols.client_messages import Busy, Cancelled, Error, Images

# in process, each in milliseconds: a hang is a failure, not a wait for the suite's 300 s
pytestmark = pytest.mark.timeout(30)

PATH = "/v1/images/generations"
BODY = {"prompt": "a heron", "size": "64x64"}


async def answer(engine: StandInEngine, reply_of, body: dict = BODY):
    """The status, headers and JSON the door answers once the engine replies `reply_of(request_id)`."""
    async with http_door_of(engine) as client:
        posted = asyncio.create_task(client.post(PATH, json=body))
        request = await admitted(engine, len(engine.admitted))
        request.future.set_result(reply_of(request.spec.request_id))
        response = await posted
        return response.status, response.headers, await response.json()


async def test_a_worker_refusing_the_step_count_names_the_field_as_admission_does():
    engine = StandInEngine()
    status, _, body = await answer(engine, lambda rid: Error(rid, "invalid_steps", "no worker runs 7 steps"))
    assert status == 400
    assert (body["error"]["code"], body["error"]["param"]) == ("invalid_steps", "num_inference_steps")
    assert [reply.code for reply in engine.counted] == ["invalid_steps"]


async def test_a_request_cancelled_at_the_drains_end_is_a_503_cancelled():
    status, headers, body = await answer(StandInEngine(), Cancelled)
    assert status == 503 and body["error"]["code"] == "cancelled"
    assert "Retry-After" not in headers


async def test_no_worker_says_when_the_engines_own_are_back_and_worker_lost_does_not():
    engine = StandInEngine()
    engine.back_in = 2.5
    status, headers, body = await answer(engine, lambda rid: Error(rid, "no_worker", "none"))
    assert (status, headers.get("Retry-After")) == (503, "3")
    status, headers, body = await answer(engine, lambda rid: Error(rid, "worker_lost", "lost"))
    assert status == 503 and "Retry-After" not in headers
    assert headers["x-should-retry"] == "false"


@pytest.mark.parametrize(("code", "status"), [("no_worker", 503), ("worker_lost", 503), ("worker_error", 500)])
async def test_a_503_closes_its_connection_so_that_a_retry_may_reach_another_engine(code, status):
    """An OpenAI client retries a 503 on the connection its pool kept alive: behind a load balancer that ties each
    connection to one engine, each retry of a no_worker went back to the engine without workers, to wait a minute
    more. A 500 (a batch that failed) keeps its connection."""
    status_got, headers, body = await answer(StandInEngine(), lambda rid: Error(rid, code, "said"))
    assert (status_got, body["error"]["code"]) == (status, code)
    assert (headers.get("Connection") == "close") is (status == 503)
    # how long a connection kept may idle, on those alone (engine/http/keep_alive.py)
    assert headers.get("Keep-Alive") == (None if status == 503 else "timeout=75")


async def test_an_answer_keeping_its_connection_says_how_long_the_engine_keeps_it_idle():
    """A pooled client that reuses a connection as the engine closes it at --keepalive-timeout has its request fail
    unread; the header lets those that read it (Node's fetch) retire it before."""
    status, headers, _ = await answer(StandInEngine(keepalive_timeout_s=4.5), lambda rid: Images(rid, []))
    assert (status, headers["Keep-Alive"]) == (200, "timeout=4")


async def test_a_refusal_at_admission_says_its_field_and_busy_says_when_in_whole_seconds():
    engine = StandInEngine()
    async with http_door_of(engine) as client:
        engine.refusal = Error("r", "invalid_request", "n 5 is more images than this engine queues at once")
        response = await client.post(PATH, json=BODY)
        assert response.status == 400 and (await response.json())["error"]["param"] == "n"
        engine.refusal = Busy("r", 2500, "client_share")
        response = await client.post(PATH, json=BODY)
        assert (response.status, response.headers["Retry-After"]) == (429, "3")
        assert (
            "Connection" not in response.headers
        )  # kept: the engine holds room for the retry (engine/dispatch/client_shares.py)
        assert "its share" in (await response.json())["error"]["message"]
    assert engine.counted == []  # refused before admission: the engine counts those


@pytest.mark.parametrize(
    "reply_of", [lambda rid: Images(rid, []), lambda rid: Error(rid, "worker_lost", "lost")], ids=["ok", "error"]
)
async def test_a_reply_made_in_the_turn_its_client_went_away_is_counted_as_made(reply_of):
    """The handler, cancelled before it woke to the reply, counted it cancelled: an error hidden from the alerts on
    its code, an image made counted as none. A reply made is counted as made, as for a client that leaves while it is
    written, and as over ZeroMQ."""
    engine = StandInEngine()
    async with http_door_of(engine) as client:
        posted = asyncio.create_task(client.post(PATH, json=BODY))
        request = await admitted(engine)
        [connection] = client.server.runner.server.connections
        reply = reply_of(request.spec.request_id)
        request.future.set_result(reply)
        connection.transport.abort()  # the client gone: seen in the loop's next turn, with the reply
        assert await eventually(lambda: engine.counted, timeout_s=10)
        with contextlib.suppress(aiohttp.ClientError):
            await posted
    assert engine.counted == [reply]
    assert engine.cancelled == []
