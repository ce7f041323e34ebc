"""An open loop of `argus bench engine` stopped while it sends (Ctrl-C) leaves no task behind to read its closed
socket: its reader outlived it, and on a Ctrl-C read the closed socket, a "Task exception was never retrieved"
traceback following the one-line "interrupted"."""

import argparse
import asyncio
import subprocess
import sys

import pytest

from engine_process import ROOT
from loadgen.bench import engine_load
from loadgen.bench.ports import LOOPBACK, free_port


@pytest.fixture
def echo_server():
    """The engine bench's bare ZeroMQ baseline: answers every request at once."""
    address = f"tcp://{LOOPBACK}:{free_port()}"
    command = [sys.executable, "-m", "loadgen.bench.baselines", "zmq-echo", "--bind", address, "--image-bytes", "64"]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "ready\n"
        yield address
    finally:
        server.kill()  # its SIGTERM is the bench's to test (Child.stop): a server that lingered outlived the test
        server.wait(10)


@pytest.mark.timeout(30)
async def test_an_open_loop_stopped_while_sending_leaves_no_reader_behind(echo_server, monkeypatch):
    async def stopped_after_some_replies(rate, total, send):
        for _ in range(5):
            send()
            await asyncio.sleep(0.05)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_load, "_paced", stopped_after_some_replies)
    args = argparse.Namespace(size=64, warmup_s=0.0)
    with pytest.raises(KeyboardInterrupt):
        await engine_load.zmq_open_loop(echo_server, args, 10.0, 1.0)
    assert [task for task in asyncio.all_tasks() if task is not asyncio.current_task()] == []
