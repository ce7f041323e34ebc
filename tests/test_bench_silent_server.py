"""`argus bench engine` fails, not hangs, when the server it measures over ZeroMQ or HTTP stops answering."""

import argparse
import socket

import pytest
import zmq

from loadgen.bench import engine_load
from loadgen.bench.ports import LOOPBACK


@pytest.fixture
def silent_server():
    """A ROUTER that takes every request and answers none, as an engine that died or hung looks to a DEALER."""
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    port = sock.bind_to_random_port(f"tcp://{LOOPBACK}")
    yield f"tcp://{LOOPBACK}:{port}"
    sock.close(linger=0)
    context.term()


@pytest.mark.timeout(30)
async def test_a_closed_loop_against_a_silent_server_fails(silent_server, monkeypatch):
    monkeypatch.setattr(engine_load, "NO_REPLY_S", 0.3)
    args = argparse.Namespace(size=64, concurrency=4, warmup_s=0.0)
    with pytest.raises(RuntimeError, match="stopped answering"):
        await engine_load.zmq_closed_loop(silent_server, args, 0.2)


@pytest.mark.timeout(30)
async def test_the_first_request_to_a_silent_server_fails(silent_server, monkeypatch):
    monkeypatch.setattr(engine_load, "NO_REPLY_S", 0.3)
    with pytest.raises(RuntimeError, match="did not answer"):
        await engine_load.first_reply(silent_server, 64)


@pytest.mark.timeout(30)
async def test_an_open_loop_against_a_silent_server_fails(silent_server, monkeypatch):
    monkeypatch.setattr(engine_load, "NO_REPLY_S", 0.3)
    args = argparse.Namespace(size=64, warmup_s=0.0)
    with pytest.raises(RuntimeError, match="stopped answering"):
        await engine_load.zmq_open_loop(silent_server, args, 20.0, 0.2)


@pytest.fixture
def silent_http_server():
    """A listening socket that never accepts: the kernel takes connections and requests, nobody answers."""
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(64)
        yield f"http://{LOOPBACK}:{listener.getsockname()[1]}"


@pytest.mark.timeout(30)
async def test_an_http_closed_loop_against_a_silent_server_fails(silent_http_server, monkeypatch):
    monkeypatch.setattr(engine_load, "NO_REPLY_S", 0.3)
    args = argparse.Namespace(size=64, http_concurrency=2, warmup_s=0.0)
    with pytest.raises(RuntimeError, match="stopped answering"):
        await engine_load.http_closed_loop(silent_http_server, args, 0.2)
