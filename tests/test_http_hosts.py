"""An engine on loopback without an API key answers only requests that name it so: a web page could otherwise drive
it by DNS rebinding (its own name made to resolve to 127.0.0.1, which the browser sends as the Host)."""

import asyncio
import http.client
import json
import socket
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engine.config import EngineConfig
from engine.http.api import build_app
from engine.http.listener import listen, on_loopback
from engine.metrics import EngineMetrics
from engine.system.listen_checks import warn_if_http_open
from engine_process import start_engine

PUBLIC = "https://images.example.com"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(
        tmp_path_factory.mktemp("hosts"), "--time-scale", "0", "--public-url", PUBLIC, backend="sim", workers=1
    )
    yield engine
    assert engine.stop() == 0


def post(engine, host: str, **headers: str) -> tuple[int, dict]:
    address, port = engine.http.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(address, int(port), timeout=30)
    try:
        body = json.dumps({"prompt": "a fox", "size": "64x64"})
        headers = {"Host": host, "Content-Type": "application/json", **headers}
        connection.request("POST", "/v1/images/generations", body, headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


# a browser sends a domain of `$`, `!` or `*` as it is (WHATWG URL), and a wildcard DNS record answers for it: such a
# Host was taken for none at all, and served
REFUSED = [
    "rebound.attacker.example",
    "rebound.attacker.example:8000",
    "192.168.1.20",
    "a$b.attacker.example",
    "x!.attacker.example:8000",
    "*.attacker.example",
    "localhost.localdomain.attacker.example",
    "lan-host.localdomain",
]


@pytest.mark.parametrize("host", REFUSED)
def test_a_host_that_does_not_name_the_engine_is_403_before_any_work(engine, host):
    refused = {"door": "http", "code": "host_not_allowed"}
    before = engine.metric("argus_requests_total", outcome="ok", code="")
    refused_before = engine.metric("argus_door_refusals_total", **refused)
    status, reply = post(engine, host)
    assert status == 403
    assert reply["error"]["code"] == "host_not_allowed" and "DNS rebinding" in reply["error"]["message"]
    assert reply["error"]["type"] == "permission_error"
    assert engine.metric("argus_requests_total", outcome="ok", code="") == before
    assert engine.metric("argus_door_refusals_total", **refused) == refused_before + 1


# localhost.localdomain and its IPv4 and IPv6 forms, loopback's names in Fedora's and RHEL's hosts file, were refused
SERVED = [
    "127.0.0.1:{port}",
    "localhost:{port}",
    "[::1]:{port}",
    "argus",
    "images.example.com",
    "localhost.localdomain:{port}",
    "LOCALHOST6.localdomain6.",
]


@pytest.mark.parametrize("host", SERVED)
def test_loopback_names_one_label_names_and_the_public_urls_host_are_served(engine, host):
    status, reply = post(engine, host.format(port=engine.http.rsplit(":", 1)[1]))
    assert status == 200, reply
    assert len(reply["data"]) == 1


def test_a_host_that_does_not_name_the_engine_is_403_whatever_its_request_id_and_is_not_counted(engine):
    """An X-Request-ID that is none was refused first, a 400 counted as a rejected request."""
    before = engine.metric("argus_requests_total", outcome="rejected", code="invalid_request")
    status, reply = post(engine, "rebound.attacker.example", **{"X-Request-ID": ""})
    assert (status, reply["error"]["code"]) == (403, "host_not_allowed")
    assert engine.metric("argus_requests_total", outcome="rejected", code="invalid_request") == before


@pytest.mark.parametrize("listening_on", ["127.0.0.1", "127.1", "0x7f.0.0.1"])
async def test_loopback_however_spelt_refuses_a_rebound_host_and_serves_a_loopback_one(caplog, listening_on):
    """`--host 127.1` listens on 127.0.0.1 (inet_aton's short form), and was taken for beyond loopback: any Host was
    answered, a rebound one too; and `curl http://127.1:8000/` was refused its own Host."""
    app = await app_bound_on(listening_on)
    assert "listens without an API key" not in caplog.text
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/answered", headers={"Host": "rebound.attacker.example"})).status == 403
        assert (await client.get("/answered", headers={"Host": "127.1:8000"})).status == 200


async def test_a_loopback_name_that_resolves_beyond_loopback_is_warned_of_and_not_host_checked(caplog, monkeypatch):
    """localhost.localdomain is taken for loopback by its name; where a resolver answers for it with another address
    (a wildcard DNS entry, a search domain), `--host localhost.localdomain` listened beyond loopback without the
    open door's warning, and with the loopback door's Host check. Here it resolves to 0.0.0.0, bound but never
    listening (engine/http/listener.listen): no peer reaches it."""
    resolve = socket.getaddrinfo

    def resolving_beyond_loopback(host, *args, **kwargs):
        return resolve("0.0.0.0" if host == "localhost.localdomain" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolving_beyond_loopback)
    app = await app_bound_on("localhost.localdomain")
    assert "HTTP on localhost.localdomain:8000 listens without an API key" in caplog.text
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/answered", headers={"Host": "rebound.attacker.example"})).status == 200


async def app_bound_on(host: str) -> web.Application:
    """The engine's HTTP app for a door bound on `host` (warned of as the engine warns), with a route /answered."""
    listener = await listen(asyncio.Protocol, host, 0)
    try:
        loopback = on_loopback(listener)
    finally:
        listener.close()
    warn_if_http_open(host, 8000, api_key=False, loopback=loopback)
    config = EngineConfig(max_body_bytes=1024, host=host)
    app = build_app(SimpleNamespace(config=config, api_keys=None, metrics=EngineMetrics(), running=True), loopback)
    app.router.add_get("/answered", lambda request: web.Response(text="answered"))
    return app
