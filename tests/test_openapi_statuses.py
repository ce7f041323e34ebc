"""Each route's statuses in GET /openapi.json are those it answers. What any route may answer before it sees a request
(an X-Request-ID that is none 400, no API key 401, a Host that does not name an engine on loopback 403, a connection
over --max-connections 503) was listed on the images route alone, and 401 and 403 there whether or not the engine
could give them: a client generated from the document had no case for /v1/models' 401."""

import http.client
import json
import socket

import pytest
from waiting import wait_for

from engine_process import start_engine
from protocols.limits import MAX_HEAD_BYTES, MAX_REQUEST_ID_CHARS

KEY = "statuses-key"
MAX_CONNECTIONS = 3
# a request each route serves: the images route's body, and path parameters that name nothing
IMAGE_BODY = json.dumps({"prompt": "a lighthouse", "size": "64x64"})
PATH_PARAMETERS = {"{name}": "no-such-image", "{model}": "no-such-model"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    options = ("--time-scale", "0", "--max-connections", str(MAX_CONNECTIONS))
    engine = start_engine(tmp_path_factory.mktemp("keyed"), *options, workers=1, backend="sim", api_key=KEY)
    yield engine
    assert engine.stop() == 0


@pytest.fixture(scope="module")
def open_on_loopback(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("open"), "--time-scale", "0", workers=1, backend="sim")
    yield engine
    assert engine.stop() == 0


def operations(engine) -> list[tuple[str, str, dict]]:
    """(method, a path to call, the operation's document) for each operation the engine's document lists."""
    status, body = engine.get("/openapi.json")
    assert status == 200
    listed = []
    for template, methods in json.loads(body)["paths"].items():
        path = template
        for parameter, value in PATH_PARAMETERS.items():
            path = path.replace(parameter, value)
        listed += [(method.upper(), path, operation) for method, operation in methods.items()]
    assert len(listed) == 9  # what the test reads is there
    return listed


def answer(engine, method: str, path: str, headers: dict[str, str]) -> int:
    address, port = engine.http.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(address, int(port), timeout=30)
    try:
        body = IMAGE_BODY if method == "POST" else None
        connection.request(method, path, body, {"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def documented(operation: dict) -> set[int]:
    return {int(status) for status in operation["responses"]}


def takes_request_ids(operation: dict) -> bool:
    return any(parameter["name"] == "X-Request-ID" for parameter in operation.get("parameters", []))


def test_the_key_a_route_asks_for_and_the_request_ids_it_refuses_are_documented(keyed):
    with_key = {"Authorization": f"Bearer {KEY}"}
    for method, path, operation in operations(keyed):
        statuses = documented(operation)
        unkeyed = answer(keyed, method, path, {})
        assert unkeyed in statuses and (unkeyed == 401) == (401 in statuses), (path, unkeyed, statuses)
        assert bool(operation["security"]) == (unkeyed == 401), path
        bad_id = answer(keyed, method, path, {**with_key, "X-Request-ID": "x" * (MAX_REQUEST_ID_CHARS + 1)})
        assert bad_id in statuses and (bad_id == 400) == takes_request_ids(operation), (path, bad_id, statuses)
        served = answer(keyed, method, path, {**with_key, "Host": "images.example.com"})
        assert served in statuses and 403 not in statuses, (path, served, statuses)  # a keyed engine checks no Host


def test_a_connection_over_the_bound_is_documented_on_every_route(keyed):
    listed = operations(keyed)
    address, port = keyed.http.removeprefix("http://").rsplit(":", 1)
    # the connections of the calls before closed (the metric's own is open as it counts)
    assert wait_for(lambda: keyed.metric("argus_http_connections") == 1)
    held = [socket.create_connection((address, int(port)), timeout=30) for _ in range(MAX_CONNECTIONS)]
    try:
        # answered as it connects, before any request is read, whatever route it would ask for: read without
        # sending, as a request sent into the connection the engine closes at once may meet a broken pipe
        with socket.create_connection((address, int(port)), timeout=30) as refused:
            answered = b""
            while chunk := refused.recv(4096):
                answered += chunk
        assert answered.startswith(b"HTTP/1.1 503 "), answered[:80]
        for _, path, operation in listed:
            assert 503 in documented(operation), path
    finally:
        for connection in held:
            connection.close()


def test_the_hosts_an_open_engine_on_loopback_refuses_are_documented_and_no_key(open_on_loopback):
    for method, path, operation in operations(open_on_loopback):
        statuses = documented(operation)
        refused = answer(open_on_loopback, method, path, {"Host": "rebound.attacker.example"})
        assert refused == 403 and 403 in statuses, (path, refused, statuses)
        served = answer(open_on_loopback, method, path, {})
        assert served in statuses and 401 not in statuses and not operation["security"], (path, served, statuses)


def test_an_expectation_not_understood_is_documented_on_every_route(keyed):
    """Any route answers an Expect other than 100-continue 417 (engine/http/expect.py), which no route listed."""
    for method, path, operation in operations(keyed):
        refused = answer(keyed, method, path, {"Authorization": f"Bearer {KEY}", "Expect": "teapot"})
        assert refused == 417 and 417 in documented(operation), (path, refused, documented(operation))


def test_a_head_over_the_bound_is_documented_on_every_route(keyed):
    """Any route answers 431 to a request line and headers over MAX_HEAD_BYTES (engine/http/head_limit.py)."""
    filler = {f"X-Filler-{n}": "v" * 8000 for n in range(MAX_HEAD_BYTES // 8000 + 1)}
    for method, path, operation in operations(keyed):
        refused = answer(keyed, method, path, {"Authorization": f"Bearer {KEY}", **filler})
        assert refused == 431 and 431 in documented(operation), (path, refused, documented(operation))
