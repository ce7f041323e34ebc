"""HTTP connections past --max-connections are answered 503 and closed; by default the bound leaves the engine
the descriptors it needs, so that a client holding connections open cannot keep it from starting a worker again."""

import asyncio
import http.client
import json
import os
import re
import resource
import select
import signal
import socket
from contextlib import ExitStack
from urllib.parse import urlsplit

import openai
import pytest
from waiting import wait_for

from engine.http import connection_limit as http_connection_limit
from engine.http.connection_limit import MAX_LINGERING, ConnectionLimit, _refusal
from engine.server import Engine
from engine_process import connect_when_listening, free_port, in_process_config, start_engine

# the tests marked own_engine find theirs started while the tests before them ran (tests/engines_ahead.py)
pytestmark = pytest.mark.usefixtures("engines_ahead")


def connect(engine) -> socket.socket:
    address = urlsplit(engine.http)
    return socket.create_connection((address.hostname, address.port), timeout=30)


def whole_log(engine) -> str:
    return engine.log_path.read_text(errors="replace")


def worker_pids(engine) -> list[int]:
    """The pids /ready lists: none while the connection it was asked on is refused (the engine has yet to see the
    test's connections close)."""
    return [worker["pid"] for worker in json.loads(engine.get("/ready")[1]).get("workers", [])]


def answered(sockets: list[socket.socket]) -> list[socket.socket]:
    """Those of `sockets` the engine has written to (or closed): an idle connection it holds is sent nothing."""
    return select.select(sockets, [], [], 0)[0]


def assert_refused(refused: socket.socket) -> None:
    """What the engine wrote on `refused` up to its close is the 503 too_many_connections, with its Retry-After."""
    answer = b""
    while chunk := refused.recv(4096):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in head, answer
    assert json.loads(body)["error"]["code"] == "too_many_connections"


def test_a_connection_past_the_bound_is_answered_503_and_closed(tmp_path):
    engine = start_engine(tmp_path, "--max-connections", "3", "--time-scale", "0", workers=1, backend="sim")
    try:
        with ExitStack() as held:
            idle = [held.enter_context(connect(engine)) for _ in range(3)]
            with connect(engine) as refused:
                assert_refused(refused)
            assert not answered(idle)  # those within the bound are held as they were
            idle.pop().close()
            # room again once the engine has seen it go (a read refused meanwhile reads as 0)
            assert wait_for(lambda: engine.metric("argus_http_connections_refused_total") >= 1)
            assert wait_for(lambda: engine.metric("argus_http_connections") == 3)  # the two idle and this read
        assert wait_for(lambda: engine.get("/health")[0] == 200)
        refused = "refused an HTTP connection: 3 connections open, the bound (--max-connections)"
        assert wait_for(lambda: refused in engine.log())  # the log thread's line may follow the refusal
    finally:
        assert engine.stop() == 0


def held_within_the_bound(engine) -> socket.socket:
    """A connection the engine has admitted, kept open: the first one tried may be refused while the engine has yet
    to see the last connection of start_engine's close."""
    while True:
        held = connect(engine)
        held.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        response = http.client.HTTPResponse(held)
        response.begin()
        response.read()
        if response.status == 200:
            return held
        held.close()


@pytest.mark.own_engine("--max-connections", "1", "--time-scale", "0", workers=1, backend="sim")
def test_a_client_still_sending_its_request_when_refused_reads_the_503(own_engine):
    """An HTTP client writes a POST's body after its headers. The engine closed a connection it refused as soon as
    it had written the 503: what came after was answered with a reset, and the client's next write failed (a broken
    pipe, or a connection reset), so it never read the 503 nor its Retry-After. Here the body is sent once the 503
    has come, as it is whenever the refusal is written before the client is done sending."""
    engine = own_engine
    body = json.dumps({"prompt": "a lighthouse", "size": "64x64"}).encode()
    head = (
        "POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        with held_within_the_bound(engine), connect(engine) as refused:
            refused.sendall(head)
            assert refused.recv(1, socket.MSG_PEEK) == b"H"  # the 503 has come
            refused.sendall(body)
            assert_refused(refused)
    finally:
        assert engine.stop() == 0


def test_the_refusal_says_a_request_id_the_openai_client_reads_and_the_engine_logs(tmp_path):
    """It carried no X-Request-ID, as every other reply does: the client's error had request_id None, and nothing tied
    it to the engine's log. Each refusal has its own, said at DEBUG as the engine says the requests it refuses."""
    engine = start_engine(
        tmp_path,
        "--max-connections",
        "1",
        "--time-scale",
        "0",
        workers=1,
        backend="sim",
        argus_options=("--log-level", "DEBUG"),
    )
    client = openai.OpenAI(base_url=engine.http + "/v1", api_key="unused", max_retries=0, timeout=30)
    try:
        with held_within_the_bound(engine):
            ids = []
            for _ in range(2):
                with pytest.raises(openai.InternalServerError) as refused:
                    client.images.generate(prompt="a lighthouse", size="64x64")
                assert refused.value.status_code == 503 and refused.value.code == "too_many_connections"
                ids.append(refused.value.request_id)
        assert None not in ids and ids[0] != ids[1]
        said = [
            f"request {request_id!r} refused too_many_connections: the engine holds 1 HTTP connection"
            for request_id in ids
        ]
        assert wait_for(lambda: all(line in whole_log(engine) for line in said))  # the log thread's lines may follow
    finally:
        assert engine.stop() == 0


# the engine's hard limit on open files in the test below; the test holds more connections than that
ENGINE_OPEN_FILES = 600


@pytest.mark.own_engine("--time-scale", "0", workers=1, backend="sim", open_files=ENGINE_OPEN_FILES)
def test_connections_held_open_leave_the_engine_the_files_to_start_a_worker_again(own_engine):
    limit, flood = ENGINE_OPEN_FILES, 700
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < flood + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, flood + 100), hard))
    engine = own_engine
    try:
        bound = int(re.search(r"at most (\d+) connections at once", whole_log(engine))[1])
        assert bound < limit - 100  # room for the engine's own files and its worker
        [worker] = worker_pids(engine)
        with ExitStack() as held:
            sockets = [held.enter_context(connect(engine)) for _ in range(flood)]
            assert wait_for(lambda: len(answered(sockets)) == flood - bound)
            os.kill(worker, signal.SIGKILL)
            # started again while the connections are held: it had no descriptor left ("Too many open files")
            assert wait_for(lambda: whole_log(engine).count("started worker local-0") == 2, timeout_s=60)
        assert wait_for(lambda: worker_pids(engine) not in ([], [worker]), timeout_s=60)
        assert "Too many open files" not in whole_log(engine)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert engine.stop() == 0


def test_the_refusal_names_a_bound_of_one_connection_in_the_singular(caplog):
    """--max-connections 1 answered 'the engine holds 1 HTTP connections', and logged '1 are open'."""
    assert b'"the engine holds 1 HTTP connection, its bound' in _refusal(1, "r1")
    assert b'"the engine holds 2 HTTP connections, its bound' in _refusal(2, "r1")
    limit = ConnectionLimit(1, lambda: None)
    assert limit.admit() is None and limit.admit() is not None
    assert "refused an HTTP connection: 1 connection open, the bound (--max-connections)" in caplog.text


class _Transport:
    def __init__(self) -> None:
        self.written, self.ended, self.closed = b"", False, False

    def write(self, data: bytes) -> None:
        self.written += data

    def write_eof(self) -> None:
        self.ended = True

    def close(self) -> None:
        self.closed = True


def server_side_inode(engine_port: int, client_port: int) -> int:
    """The inode of the engine's socket of the connection from `client_port` (IPv4 loopback)."""
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
            if (local, remote) == (engine_port, client_port):
                return int(fields[9])
    raise AssertionError(f"no connection from port {client_port} to port {engine_port}")


def held_here(inode: int) -> bool:
    """Whether this process (the engine's, in the test's) holds the socket: a connection both ends closed is done for
    TCP, yet its descriptor is the engine's until it closes it."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == f"socket:[{inode}]":
                return True
        except FileNotFoundError:  # closed since listed
            pass
    return False


async def test_a_refused_connection_is_closed_as_its_client_ends_its_input(tmp_path, monkeypatch):
    """Not held until its linger is up: the half-close layer, outermost on every connection, closes a connection
    whose client is done sending and that owes no answer, a refused one too. The linger is made an hour long here:
    only that close lets the descriptor go within the test's time."""
    monkeypatch.setattr(http_connection_limit, "LINGER_S", 3600.0)
    config = in_process_config(tmp_path, port=free_port(), max_connections=1)
    engine = Engine(config)
    running = asyncio.create_task(engine.run())
    try:
        _, held = await connect_when_listening(config.port)
        reader, refused = await asyncio.open_connection("127.0.0.1", config.port)
        # the whole answer, to the end the engine marks once it is written: its client may close at once
        assert (await asyncio.wait_for(reader.read(), 30)).startswith(b"HTTP/1.1 503 ")
        inode = server_side_inode(config.port, refused.get_extra_info("sockname")[1])
        assert held_here(inode)  # lingering: what the client sends yet is read, not answered with a reset
        refused.write_eof()
        for _ in range(600):
            if not held_here(inode):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the refused connection was held after its client closed its side")
        refused.close()
        held.close()
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 30)


async def test_refused_connections_linger_up_to_the_bound_and_past_it_are_closed_once_answered():
    """Bounded, a flood of connections holds no more than MAX_LINGERING of the descriptors the bound leaves."""
    limit = ConnectionLimit(0, lambda: None)
    refused = [limit.protocols(asyncio.Protocol)() for _ in range(MAX_LINGERING + 3)]
    transports = [_Transport() for _ in refused]
    for protocol, transport in zip(refused[: MAX_LINGERING + 1], transports, strict=False):
        protocol.connection_made(transport)
    assert all(transport.written.startswith(b"HTTP/1.1 503 ") for transport in transports[: MAX_LINGERING + 1])
    assert [transport.closed for transport in transports[: MAX_LINGERING + 1]] == [False] * MAX_LINGERING + [True]
    refused[0].connection_lost(None)  # its client closed: its one place is free again
    for protocol, transport in zip(refused[-2:], transports[-2:], strict=True):
        protocol.connection_made(transport)
    assert [transport.closed for transport in transports[-2:]] == [False, True]
