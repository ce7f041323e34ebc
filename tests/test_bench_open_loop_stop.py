"""An open loop of `argus bench engine` stopped while it sends (Ctrl-C) leaves no task behind to read its closed
socket: its reader outlived it, and on a Ctrl-C read the closed socket, a "Task exception was never retrieved"
traceback following the one-line "interrupted"."""

import argparse
import asyncio
import subprocess
import sys
import urllib.request

import pytest
from waiting import wait_for

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


@pytest.fixture
def http_echo_server(tmp_path):
    """The engine bench's bare HTTP baseline: answers every request at once."""
    template = tmp_path / "response.json"
    template.write_text('{"data": []}')
    port = free_port()
    command = [sys.executable, "-m", "loadgen.bench.baselines", "http-echo", "--port", str(port)]
    server = subprocess.Popen([*command, "--template", str(template)], cwd=ROOT)
    url = f"http://{LOOPBACK}:{port}"
    try:
        assert wait_for(lambda: _answers(url + "/health"), timeout_s=20.0), "the baseline did not start"
        yield url
    finally:
        server.kill()
        server.wait(10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0):
            return True
    except OSError:
        return False


@pytest.mark.timeout(30)
async def test_an_http_open_loop_stopped_while_sending_leaves_no_request_behind(http_echo_server, monkeypatch):
    """Its requests in flight outlived it, each to fail on the closed session with a "Task exception was never
    retrieved" traceback (or to be destroyed pending) after the one-line "interrupted"."""

    async def stopped_with_requests_in_flight(rate, total, send):
        for _ in range(5):
            send()
        await asyncio.sleep(0)  # sent, not answered
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_load, "_paced", stopped_with_requests_in_flight)
    args = argparse.Namespace(size=64, warmup_s=0.0, http_concurrency=4)
    with pytest.raises(KeyboardInterrupt):
        await engine_load.http_open_loop(http_echo_server, args, 10.0, 1.0)
    assert [task for task in asyncio.all_tasks() if task is not asyncio.current_task()] == []
