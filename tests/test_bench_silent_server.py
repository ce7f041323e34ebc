"""`argus bench engine` fails, not hangs, when the server it measures over ZeroMQ stops answering."""

import argparse

import pytest
import zmq

from loadgen.bench import engine_load
from loadgen.bench.harness import LOOPBACK


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
