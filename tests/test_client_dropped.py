"""An engine.client client dropped without close() is closed as the garbage collector finds it: a warning, never a
hang, and nothing left open."""

import os
import subprocess
import sys

import pytest

from engine_process import ROOT, start_engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("dropped"), "--time-scale", "0.02", workers=1, backend="sim")
    yield engine
    assert engine.stop() == 0


@pytest.mark.parametrize("kind", ["async", "sync in a cycle"])
def test_a_client_dropped_without_close_is_closed_by_the_garbage_collector(engine, kind):
    """An AsyncArgusClient that has made a call is in a reference cycle (its reader task), as a client held by a
    pipeline object it refers back to is: collected, pyzmq's finalizers waited for ever for its sockets to close."""
    try:
        ran = subprocess.run(
            [sys.executable, "-W", "always::ResourceWarning", "-c", _DROPPED, engine.client_address, kind],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as hung:  # before: in gc.collect(), for ever
        pytest.fail(f"the process hung: {hung.stdout}")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["Images", "collected, no descriptor left open"]
    assert f"ResourceWarning: argus client of {engine.client_address} dropped without close(): closing it" in ran.stderr


_DROPPED = """
import asyncio, gc, os, sys
from engine.client import ArgusClient, AsyncArgusClient

address, kind = sys.argv[1:]
gc.disable()  # collected where the test says, not at some allocation on the way
open_before = set(os.listdir("/proc/self/fd"))

async def call():
    client = AsyncArgusClient(address)
    return await asyncio.wait_for(client.generate("a fox", width=64, height=64), 60)

class Stage:
    def __init__(self):
        self.client = ArgusClient(address, timeout_s=60)
        self.client.stage = self

if kind == "async":
    reply = asyncio.run(call())
else:
    reply = Stage().client.generate("a fox", width=64, height=64)
print(type(reply).__name__, flush=True)
gc.collect()
left_open = set(os.listdir("/proc/self/fd")) - open_before
print("collected, no descriptor left open" if not left_open else f"left open: {left_open}", flush=True)
"""
