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


@pytest.mark.parametrize(
    "kind", ["async", "sync in a cycle", "async, its loop still running", "async, kept past its loop's end"]
)
def test_a_client_dropped_without_close_is_closed_by_the_garbage_collector(engine, kind):
    """A client in a reference cycle (held by a pipeline object it refers back to; an AsyncArgusClient that had made
    a call was in one, through its reader task): collected, pyzmq's finalizers waited for ever for its sockets to close.
    An AsyncArgusClient dropped while its event loop still runs (a service's runs as long as the service) is collected
    then, not when the loop ends: the loop held its reader task, which held it, and each such client kept its sockets
    and its context's I/O thread for as long as the loop ran, without a warning. One kept past its loop's end (as one
    client serves one asyncio.run after another) is freed as it is dropped, with no garbage collector's pass: its
    reader, cancelled as the loop ended, held it through the exception the task keeps."""
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
    assert "Task" not in ran.stderr  # its reader and watcher end quietly: no task pending or failed at the loop's end


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

def collect(open_before, gc_pass=True):
    if gc_pass:
        gc.collect()
    left_open = set(os.listdir("/proc/self/fd")) - open_before
    print("collected, no descriptor left open" if not left_open else f"left open: {left_open}", flush=True)

async def drop_in_running_loop():
    open_before = set(os.listdir("/proc/self/fd"))  # the event loop's own too
    print(type(await call()).__name__, flush=True)
    collect(open_before)  # the loop still runs
    await asyncio.sleep(0.1)  # the reader and watcher, their waits cancelled, have their turns

if kind == "async, its loop still running":
    asyncio.run(drop_in_running_loop())
    sys.exit()
async def call_and_keep():
    client = AsyncArgusClient(address)
    return client, await asyncio.wait_for(client.generate("a fox", width=64, height=64), 60)

if kind == "async, kept past its loop's end":
    client, reply = asyncio.run(call_and_keep())
    print(type(reply).__name__, flush=True)
    del client
    collect(open_before, gc_pass=False)
    sys.exit()
if kind == "async":
    reply = asyncio.run(call())
else:
    reply = Stage().client.generate("a fox", width=64, height=64)
print(type(reply).__name__, flush=True)
collect(open_before)
"""
