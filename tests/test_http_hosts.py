"""An engine on loopback without an API key answers only requests that name it so: a web page could otherwise drive
it by DNS rebinding (its own name made to resolve to 127.0.0.1, which the browser sends as the Host)."""

import http.client
import json
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engine.config import EngineConfig
from engine.http.api import build_app
from engine.metrics import EngineMetrics
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
async def test_loopback_however_spelt_refuses_a_rebound_host_and_serves_a_loopback_one(listening_on):
    """`--host 127.1` listens on 127.0.0.1 (inet_aton's short form), and was taken for beyond loopback: any Host was
    answered, a rebound one too; and `curl http://127.1:8000/` was refused its own Host."""
    config = EngineConfig(max_body_bytes=1024, host=listening_on)
    app = build_app(SimpleNamespace(config=config, api_keys=None, metrics=EngineMetrics(), running=True))
    app.router.add_get("/answered", lambda request: web.Response(text="answered"))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/answered", headers={"Host": "rebound.attacker.example"})).status == 403
        assert (await client.get("/answered", headers={"Host": "127.1:8000"})).status == 200
