"""Which requests the HTTP door lets in before any work, decided in process (tests/engine_stand_in.py). With an engine:
tests/test_http_hosts.py, tests/test_http_auth.py."""

import asyncio
import gzip
import json

import pytest
from engine_stand_in import StandInEngine, http_door_of

from engine.http.api_keys import ApiKeys
from protocols.client_messages import Busy

# in process, each in milliseconds: a hang is a failure, not a wait for the suite's 300 s
pytestmark = pytest.mark.timeout(30)

BODY = b'{"prompt": "a heron", "size": "64x64"}'
GENERATIONS = "/v1/images/generations"


async def reaches_the_engine(client, engine: StandInEngine, **headers: str) -> bool:
    """Whether a request for images sent with `headers` is handed to the engine (which answers it Busy at once)."""
    engine.refusal = Busy("", 1000, "queue_full")
    before = len(engine.clients)
    headers = {"Content-Type": "application/json", **headers}
    async with client.post("/v1/images/generations", data=BODY, headers=headers) as response:
        await response.read()
    return len(engine.clients) > before


async def test_an_engine_listening_beyond_loopback_without_a_key_takes_any_host():
    """The Host check guards an engine on loopback from web pages (DNS rebinding); one on every address is reached by
    names of its own (gpu-box.lan:8000), and refusing them would refuse all of its clients."""
    async with http_door_of(StandInEngine(host="0.0.0.0"), loopback=False) as client:
        response = await client.get("/v1/models", headers={"Host": "gpu-box.lan:8000"})
        assert response.status == 200


async def test_a_request_without_the_key_is_told_the_scheme_to_send_it_in():
    """A 401 must say how to authenticate (RFC 9110, 11.6.1): a client learns there to send the key as a bearer
    token."""
    async with http_door_of(StandInEngine(api_keys=ApiKeys.single("a key"))) as client:
        response = await client.get("/v1/models")
        assert (response.status, response.headers.get("WWW-Authenticate")) == (401, "Bearer")
        response = await client.get("/v1/models", headers={"Authorization": "Bearer a key"})
        assert response.status == 200


async def test_a_body_said_to_be_in_the_identity_coding_is_read_whatever_the_case():
    """Content codings are named case-insensitively (RFC 9110, 8.4.1): "Identity" is no compression."""
    engine = StandInEngine()
    async with http_door_of(engine) as client:
        for coding in ("identity", "Identity", "IDENTITY"):
            assert await reaches_the_engine(client, engine, **{"Content-Encoding": coding}), coding
        assert not await reaches_the_engine(client, engine, **{"Content-Encoding": "gzip"})


@pytest.mark.parametrize("lines", [("identity", "gzip"), ("gzip", "identity"), ("identity", "identity, gzip")])
async def test_a_body_compressed_by_a_second_content_encoding_line_is_refused(lines):
    """A list header's lines are one list (RFC 9110, 5.3). The first line alone was read: `identity` then `gzip` was
    taken, and aiohttp, which reads the last (its C parser), inflated the body and served it."""
    engine = StandInEngine()
    engine.refusal = Busy("", 1000, "queue_full")  # answered at once, if it reaches the engine
    headers = [("Content-Type", "application/json")] + [("Content-Encoding", line) for line in lines]
    async with http_door_of(engine) as client:
        async with client.post("/v1/images/generations", data=gzip.compress(BODY), headers=headers) as response:
            assert response.status == 415
            assert (await response.json())["error"]["code"] == "unsupported_encoding"
    assert engine.clients == []


async def test_a_client_told_to_send_its_body_uncompressed_may_send_it_again_at_once():
    """A body said to be gzip that is none (the header sent, the body left as it was) does not inflate: aiohttp,
    reading on to the end of the body after the 415, closed the connection it had said it kept. The client's next
    request, the body sent again uncompressed on the same connection, failed (the server disconnected)."""
    engine = StandInEngine()
    engine.refusal = Busy("", 1000, "queue_full")  # answered at once, once it reaches the engine
    headers = {"Content-Type": "application/json"}
    async with http_door_of(engine) as client:
        coded = {**headers, "Content-Encoding": "gzip"}
        async with client.post("/v1/images/generations", data=BODY, headers=coded) as response:
            assert response.status == 415
        async with client.post("/v1/images/generations", data=BODY, headers=headers) as response:
            assert response.status == 429
    assert len(engine.clients) == 1


async def test_a_body_over_the_limit_is_refused_and_counted_as_refused():
    engine = StandInEngine(max_body_bytes=1024)
    async with http_door_of(engine) as client:
        body = b'{"prompt": "' + b"a" * 2000 + b'"}'
        headers = {"Content-Type": "application/json"}
        async with client.post("/v1/images/generations", data=body, headers=headers) as response:
            assert response.status == 413
            assert (await response.json())["error"]["code"] == "body_too_large"
    assert engine.metric("argus_requests_total", outcome="rejected", code="body_too_large") == 1
    assert engine.clients == []


async def status_of_absolute_form(client, target: str, host: str) -> tuple[int, dict]:
    """The status and JSON body of a request for images sent with an absolute-form target (`POST http://HOST/path`,
    as a client sends one to a forward proxy) and the Host header `host`."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        head = f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nConnection: close\r\n"
        writer.write(f"{head}Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
        status_line, _, rest = (await asyncio.wait_for(reader.read(), 5)).partition(b"\r\n")
        return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])
    finally:
        writer.close()


async def test_an_absolute_form_target_that_does_not_name_an_engine_on_loopback_is_refused():
    """aiohttp takes the request's URL from such a target (RFC 9112, 3.2.2 has a server ignore the Host header then),
    and the image URLs of response_format url with it: the Host header alone was checked, and `POST
    http://evil.example:1/v1/images/generations` with `Host: localhost` was served URLs on http://evil.example:1."""
    engine = StandInEngine()
    engine.refusal = Busy("", 1000, "queue_full")  # answered at once, if it reaches the engine
    async with http_door_of(engine) as client:
        status, body = await status_of_absolute_form(client, "http://evil.example:1" + GENERATIONS, "localhost")
        assert (status, body["error"]["code"]) == (403, "host_not_allowed")
        assert "evil.example:1" in body["error"]["message"]
        status, _ = await status_of_absolute_form(client, "http://localhost:1" + GENERATIONS, "evil.example")
        assert status == 403
        assert engine.clients == []
        status, _ = await status_of_absolute_form(client, "http://localhost:1" + GENERATIONS, "127.0.0.1")
        assert status == 429
    assert len(engine.clients) == 1
