"""`Expect: 100-continue` (RFC 9110, 10.1.1), in process (tests/engine_stand_in.py): the engine asks for a body only
once the request has passed what the request itself would be refused for. aiohttp answered the expectation before
any of the engine's checks ran: a client without the API key, one from a page rebinding a name to loopback, and one
whose Content-Length was over the limit were all told to send their bodies (curl sent 1 MiB of a 2 MiB one before
its 413)."""

from __future__ import annotations

import asyncio
import json

import pytest
from engine_stand_in import StandInEngine, http_door_of

from engine.http.api_keys import ApiKeys
from protocols.client_messages import Busy

pytestmark = pytest.mark.timeout(30)

BODY = b'{"prompt": "a heron", "size": "64x64"}'


async def first_answer(client, head: bytes, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """Sends a request's head alone, and then `body` if the engine asks for it with a 100 Continue; the status,
    headers and body of the first answer that is not a 100 Continue, or of the 100 Continue if no body is given."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head + b"\r\n")
        while True:
            status, headers = await _read_head(reader)
            if status != 100 or body is None:
                break
            writer.write(body)
        length = int(headers.get("content-length", 0))
        return status, headers, await reader.readexactly(length)
    finally:
        writer.close()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    lines = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode().split("\r\n")
    fields = (line.partition(":") for line in lines[1:] if line)
    return int(lines[0].split()[1]), {name.lower(): value.strip() for name, _, value in fields}


def head(*fields: str, length: int = len(BODY)) -> bytes:
    lines = [
        "POST /v1/images/generations HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *fields,
    ]
    return "".join(f"{line}\r\n" for line in lines).encode()


def assert_json_error(answer: tuple[int, dict[str, str], bytes], status: int, code: str) -> None:
    got, headers, body = answer
    assert got == status, answer
    assert json.loads(body)["error"]["code"] == code, answer
    assert headers.get("x-request-id"), headers


async def test_a_client_without_the_key_is_refused_before_it_is_asked_for_its_body():
    async with http_door_of(StandInEngine(api_keys=ApiKeys.single("a key"))) as client:
        answer = await first_answer(client, head("Expect: 100-continue"))
        assert_json_error(answer, 401, "unauthorized")
        assert answer[1]["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("request_line", [b"POST /v1/images/nowhere", b"POST /v1/models"])
async def test_a_request_no_route_takes_is_refused_before_it_is_asked_for_its_body(request_line):
    """aiohttp met the expectation of a request no route takes itself, before the engine's checks: a wrong path or
    method was asked for its body by an engine whose key the client did not hold."""
    async with http_door_of(StandInEngine(api_keys=ApiKeys.single("a key"))) as client:
        answer = await first_answer(
            client, head("Expect: 100-continue").replace(b"POST /v1/images/generations", request_line)
        )
        assert_json_error(answer, 401, "unauthorized")
        assert answer[1]["connection"] == "close"


async def test_a_host_that_does_not_name_an_engine_on_loopback_is_refused_before_its_body_is_asked_for():
    async with http_door_of(StandInEngine()) as client:
        answer = await first_answer(client, head("Expect: 100-continue").replace(b"127.0.0.1", b"rebound.example"))
        assert_json_error(answer, 403, "host_not_allowed")


async def test_a_body_said_to_be_over_the_limit_is_refused_before_it_is_sent_and_counted():
    engine = StandInEngine(max_body_bytes=1024)
    async with http_door_of(engine) as client:
        answer = await first_answer(client, head("Expect: 100-continue", length=2 * 1024 * 1024))
        assert_json_error(answer, 413, "body_too_large")
    assert engine.metric("argus_requests_total", outcome="rejected", code="body_too_large") == 1


async def test_a_request_the_door_lets_in_is_asked_for_its_body_and_served():
    engine = StandInEngine()
    engine.refusal = Busy("", 1000, "queue_full")  # answered at once, once it reaches the engine
    async with http_door_of(engine) as client:
        assert (await first_answer(client, head("Expect: 100-continue")))[0] == 100
        answer = await first_answer(client, head("Expect: 100-continue"), BODY)
        assert_json_error(answer, 429, "busy")
    assert len(engine.clients) == 1


# a path no route takes, and a route's path with a method it does not take, too
@pytest.mark.parametrize(
    "request_line", [b"POST /v1/images/generations", b"GET /v1/models", b"POST /v1/images/nowhere", b"POST /health"]
)
async def test_an_expectation_not_understood_is_a_json_417_with_the_request_id(request_line):
    """aiohttp's own 417 was plain text, without the X-Request-ID every other answer carries (so it still was for a
    request no route takes)."""
    async with http_door_of(StandInEngine()) as client:
        answer = await first_answer(
            client, head("Expect: teapot").replace(b"POST /v1/images/generations", request_line)
        )
        assert_json_error(answer, 417, "expectation_failed")
        assert "teapot" in json.loads(answer[2])["error"]["message"]


async def test_an_expectation_not_understood_on_the_images_path_is_counted_as_its_other_refusals_are():
    """Refused before the engine saw it, as a 413 or 415 is: those are counted in argus_requests_total (and said at
    DEBUG), the 417 was in no series and no line."""
    engine = StandInEngine()
    async with http_door_of(engine) as client:
        assert_json_error(await first_answer(client, head("Expect: teapot")), 417, "expectation_failed")
        assert_json_error(
            await first_answer(client, head("Expect: teapot").replace(b"POST /v1/images/generations", b"GET /health")),
            417,
            "expectation_failed",
        )
    assert engine.metric("argus_requests_total", outcome="rejected", code="expectation_failed") == 1


async def test_a_request_refused_before_its_body_was_asked_for_is_told_its_connection_closes():
    """Refused before the 100 Continue, a client may send its body all the same, or its next request (RFC 9110,
    10.1.1): the engine, which cannot tell which, says it closes the connection. Kept open, it took the next request's
    bytes for the body (aiohttp reads an unread body to its end before the next request)."""
    async with http_door_of(StandInEngine(api_keys=ApiKeys.single("a key"))) as client:
        status, headers, _ = await first_answer(client, head("Expect: 100-continue"))
        assert (status, headers.get("connection")) == (401, "close"), headers
        # so is one that did not wait to be asked, when its body has not come (tests/test_http_refused_bodies.py)
        status, headers, _ = await first_answer(client, head())
        assert (status, headers.get("connection")) == (401, "close"), headers
