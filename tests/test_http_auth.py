"""An API key guards every HTTP route but /health and the image URLs it hands out."""

import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from process_checks import milp_processes_of
from waiting import wait_for

from engine.config import API_KEY_ENV
from engine_process import start_engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv(API_KEY_ENV, "s3cret")  # as an operator keeps it off the command line
        engine = start_engine(tmp_path_factory.mktemp("auth"), "--time-scale", "0.001", backend="sim", api_key="s3cret")
    yield engine
    assert engine.stop() == 0


def call(engine, path: str, key: str | None, body: dict | None = None, scheme: str = "Bearer") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"{scheme} {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(engine.http + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}") if path != "/metrics" else {}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("key", [None, "wrong", "s3cret-but-longer", ""])
@pytest.mark.parametrize("path", ["/v1/images/generations", "/ready", "/metrics", "/openapi.json", "/v1/models"])
def test_missing_or_wrong_key_is_401(engine, path, key):
    body = {"prompt": "a cat", "size": "64x64"} if path.startswith("/v1/images") else None
    status, reply = call(engine, path, key, body)
    assert status == 401
    assert (reply["error"]["type"], reply["error"]["code"]) == ("authentication_error", "unauthorized")


def test_a_key_that_is_not_utf8_is_401_not_500(engine):
    # http.client sends header values as latin-1: these are the bytes ff fe, which aiohttp keeps as surrogates
    status, reply = call(engine, "/v1/images/generations", "\xff\xfe", {"prompt": "a cat", "size": "64x64"})
    assert status == 401 and reply["error"]["code"] == "unauthorized"


def test_right_key_is_served_and_health_needs_none(engine):
    status, reply = call(engine, "/v1/images/generations", "s3cret", {"prompt": "a cat", "size": "64x64"})
    assert status == 200 and len(reply["data"]) == 1
    assert call(engine, "/health", None)[0] == 200
    assert call(engine, "/metrics", "s3cret")[0] == 200


@pytest.mark.parametrize("scheme", ["bearer", "BEARER"])
def test_the_scheme_is_case_insensitive(engine, scheme):
    # as HTTP has it: before, "bearer s3cret" was a 401
    assert call(engine, "/metrics", "s3cret", scheme=scheme)[0] == 200


@pytest.mark.parametrize(("scheme", "key"), [("Basic", "s3cret"), ("", "s3cret"), ("Bearer", "s3cret extra")])
def test_the_right_key_under_another_scheme_or_spacing_is_401(engine, scheme, key):
    assert call(engine, "/metrics", key, scheme=scheme)[0] == 401


@pytest.mark.parametrize("more_spaces", [" ", "  "])
def test_more_than_one_space_may_part_the_scheme_from_the_key(engine, more_spaces):
    # "Bearer" 1*SP token (RFC 6750, 2.1), `call` writing one space: "Bearer  s3cret" was a 401
    assert call(engine, "/metrics", more_spaces + "s3cret")[0] == 200


def test_an_image_url_is_fetched_without_the_key(engine):
    body = {"prompt": "a cat", "size": "64x64", "response_format": "url"}
    status, reply = call(engine, "/v1/images/generations", "s3cret", body)
    assert status == 200
    with urllib.request.urlopen(reply["data"][0]["url"], timeout=30) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/png"
        assert response.read().startswith(b"\x89PNG")


def test_the_local_workers_and_the_milp_process_are_not_handed_the_api_key(engine):
    """They inherit the engine's environment, and need nothing of the HTTP door's."""
    status, ready = call(engine, "/ready", "s3cret")
    assert status == 200 and ready["workers"]
    assert wait_for(lambda: milp_processes_of(engine.process.pid))  # started with the first plan
    for pid in [worker["pid"] for worker in ready["workers"]] + milp_processes_of(engine.process.pid):
        names = {entry.partition(b"=")[0] for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")}
        assert b"PATH" in names and API_KEY_ENV.encode() not in names


def test_with_a_key_the_host_does_not_matter(engine):
    """The key guards the engine: a name no DNS rebinding check would take is served to a client that holds it."""
    address, port = engine.http.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(address, int(port), timeout=30)
    headers = {"Host": "rebound.attacker.example", "Authorization": "Bearer s3cret", "Content-Type": "application/json"}
    connection.request("POST", "/v1/images/generations", json.dumps({"prompt": "a cat", "size": "64x64"}), headers)
    assert connection.getresponse().status == 200
    connection.close()


@pytest.mark.parametrize("key", [None, "wrong"])
def test_a_request_without_the_key_is_401_whatever_its_request_id_and_is_counted_as_a_door_refusal(engine, key):
    """An X-Request-ID that is none was refused first, a 400 counted as a rejected request: any client that could
    reach the engine, holding no key, moved the series an operator alerts on. A refusal for the key was counted
    nowhere: a client's stale key, or someone guessing, went unseen."""
    rejected = {"outcome": "rejected", "code": "invalid_request"}
    refused = {"door": "http", "code": "unauthorized"}
    before = engine.metric("argus_requests_total", **rejected)
    refused_before = engine.metric("argus_door_refusals_total", **refused)
    address, port = engine.http.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(address, int(port), timeout=30)
    headers = {"X-Request-ID": "x" * 300, "Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    connection.request("POST", "/v1/images/generations", json.dumps({"prompt": "a cat", "size": "64x64"}), headers)
    response = connection.getresponse()
    reply = json.loads(response.read())
    connection.close()
    assert (response.status, reply["error"]["code"]) == (401, "unauthorized")
    assert response.getheader("X-Request-ID")  # one of the engine's, as on every reply
    assert engine.metric("argus_requests_total", **rejected) == before
    assert engine.metric("argus_door_refusals_total", **refused) == refused_before + 1


def test_with_the_key_a_request_id_that_is_none_is_still_400(engine):
    address, port = engine.http.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(address, int(port), timeout=30)
    headers = {"X-Request-ID": "x" * 300, "Authorization": "Bearer s3cret", "Content-Type": "application/json"}
    connection.request("POST", "/v1/images/generations", json.dumps({"prompt": "a cat", "size": "64x64"}), headers)
    response = connection.getresponse()
    assert response.status == 400 and "X-Request-ID header is 300 characters long" in response.read().decode()
    connection.close()
