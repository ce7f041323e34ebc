"""A request refused before its body is read (no API key, a body over the limit, one not sent as JSON), in process
(tests/engine_stand_in.py): told that its connection closes when its body has not all come. aiohttp reads and drops
the rest for up to 10 s after the answer, then closes the connection: said kept, a client that stopped sending held
it that long, waiting to send its next request on it."""

from __future__ import annotations

import asyncio

import pytest
from engine_stand_in import StandInEngine, http_door_of

from engine.http.api_keys import ApiKeys

pytestmark = pytest.mark.timeout(30)

BODY = b'{"prompt": "a heron", "size": "64x64"}'
KEY = "a key"


def request(content_type: str = "application/json", key: str | None = KEY, length: int = len(BODY)) -> bytes:
    lines = [
        "POST /v1/images/generations HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
        *([f"Authorization: Bearer {key}"] if key else []),
    ]
    return "".join(f"{line}\r\n" for line in lines).encode() + b"\r\n"


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and headers of the next answer, its body read."""
    lines = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode().split("\r\n")
    fields = (line.partition(":") for line in lines[1:] if line)
    headers = {name.lower(): value.strip() for name, _, value in fields}
    await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), 10)
    return int(lines[0].split()[1]), headers


REFUSED = {
    "no key": (request(key=None), 401),
    "over the limit": (request(length=2 * 1024 * 1024), 413),
    "not JSON": (request(content_type="text/plain"), 415),
}


@pytest.mark.parametrize(("head", "status"), REFUSED.values(), ids=REFUSED.keys())
async def test_a_request_refused_before_its_body_came_is_told_its_connection_closes(head, status):
    async with http_door_of(StandInEngine(api_keys=ApiKeys.single(KEY), max_body_bytes=1024)) as client:
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        try:
            writer.write(head)
            got, headers = await answer(reader)
            assert (got, headers.get("connection")) == (status, "close"), headers
        finally:
            writer.close()


async def test_a_refused_request_whose_body_came_with_it_keeps_its_connection():
    """Its body already read off the connection, nothing is left to take for the next request: a client refused (its
    key gone stale) sends its next one on the same connection, as before."""
    async with http_door_of(StandInEngine(api_keys=ApiKeys.single(KEY))) as client:
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        try:
            writer.write(request(key=None) + BODY)
            got, headers = await answer(reader)
            assert (got, headers.get("connection")) == (401, None), headers
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await answer(reader))[0] == 200
        finally:
            writer.close()
