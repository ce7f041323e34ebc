"""GET /openapi.json, read through a reverse proxy that serves the engine under a path (`--public-url`), sends the
tools that read it (Swagger UI, generated clients, schemathesis) to that path. It named no server, which OpenAPI reads
as "/" of the host the document came from: every operation resolved to the proxy's root, outside the engine's path,
while the image URLs the engine handed out did start with --public-url."""

import json
from urllib.parse import urljoin

import aiohttp
import pytest
from aiohttp import web
from stand_in_http import served

from engine_process import free_port, start_engine
from protocols.openapi import openapi_document

PREFIX = "/argus"


@pytest.fixture
async def proxy_and_engine(tmp_path):
    """A reverse proxy on a port of its own that takes PREFIX off the path, in front of an engine told so."""
    port = free_port()
    public = f"http://127.0.0.1:{port}{PREFIX}"
    engine = start_engine(tmp_path, "--time-scale", "0", "--public-url", public, workers=1, backend="sim")
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.Response:
        if not request.path.startswith(PREFIX + "/"):
            return web.Response(status=404, text="not the engine's")
        body = await request.read()
        target = engine.http + request.rel_url.path_qs.removeprefix(PREFIX)
        headers = {"Content-Type": request.headers.get("Content-Type", "application/octet-stream")}
        async with session.request(request.method, target, data=body or None, headers=headers) as reply:
            return web.Response(body=await reply.read(), status=reply.status, content_type=reply.content_type)

    proxy = web.Application()
    proxy.router.add_route("*", "/{path:.*}", forward)
    try:
        async with served(proxy, port):
            yield public, engine
    finally:
        await session.close()
        assert engine.stop() == 0


def operation_url(document_url: str, document: dict, path: str) -> str:
    """Where an operation is served, as OpenAPI 3.1 resolves it: its first server's URL, itself relative to where the
    document was read ("/" when none is named), then the path."""
    server = document.get("servers", [{"url": "/"}])[0]["url"]
    return urljoin(document_url, server).rstrip("/") + path


async def test_the_document_read_through_the_proxy_sends_each_operation_through_it(proxy_and_engine):
    public, _ = proxy_and_engine
    document_url = public + "/openapi.json"
    async with aiohttp.ClientSession() as session:
        async with session.get(document_url) as reply:
            assert reply.status == 200
            document = json.loads(await reply.read())
        assert operation_url(document_url, document, "/v1/models").startswith(public + "/")
        async with session.get(operation_url(document_url, document, "/v1/models")) as reply:
            assert reply.status == 200 and (await reply.json())["data"][0]["id"] == "argus-sim"
        body = {"prompt": "a lighthouse", "size": "64x64", "response_format": "url"}
        async with session.post(operation_url(document_url, document, "/v1/images/generations"), json=body) as reply:
            assert reply.status == 200
            (image,) = (await reply.json())["data"]
        # the image URLs it hands out start where the document's operations do
        assert image["url"].startswith(operation_url(document_url, document, "/v1/images/files/"))
        async with session.get(image["url"]) as reply:
            assert reply.status == 200 and (await reply.read()).startswith(b"\x89PNG")


def test_an_engine_reached_directly_names_no_server():
    """Without --public-url the operations are where the document is: OpenAPI's default server, "/"."""
    assert "servers" not in openapi_document("1.0", api_key=False, host_checked=True, public_url=None)
