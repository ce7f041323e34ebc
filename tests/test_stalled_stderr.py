"""An engine whose standard error takes nothing for a while (a terminal paused with Ctrl-S, a pipe whose reader is
stopped or slow, a log shipper pushing back) still serves: its log lines wait in a bounded queue for the thread that
writes them, and those past its bound are dropped and counted, said in one line once writing resumes. Before, the
log's writes were the event loop's own: the first one the pipe could not take held up /health and every request. So
with a worker's, started again meanwhile: it sends its hello once it has said it loads its backend."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from engine_process import ROOT, free_port


def _health(http: str) -> dict:
    with urllib.request.urlopen(http + "/health", timeout=10) as response:
        return json.loads(response.read())


def _ready_worker(http: str, process: subprocess.Popen, not_pid: int | None = None) -> int:
    """The pid of its worker once one is ready (not `not_pid`): a worker logs as it starts, through a thread of its
    own too (engine/logs/thread.py)."""
    for _ in range(600):
        assert process.poll() is None, f"the engine exited with {process.returncode}"
        try:
            with urllib.request.urlopen(http + "/ready", timeout=10) as response:
                pids = [worker["pid"] for worker in json.loads(response.read())["workers"]]
                if pids and pids[0] != not_pid:
                    return pids[0]
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the engine's worker never got ready")


def _malformed(port: int) -> bytes:
    """Sends an HTTP message aiohttp cannot parse: answered 400, and one DEBUG line in the engine's log."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"NOT HTTP\r\n\r\n")
        return connection.recv(64)  # a timeout here: the engine stopped answering


def _image(http: str) -> dict:
    body = json.dumps({"prompt": "a lighthouse at dusk", "n": 1}).encode()
    request = urllib.request.Request(http + "/v1/images/generations", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _read_until(fd: int, wanted: bytes, timeout_s: float) -> bytes:
    read, deadline = b"", time.monotonic() + timeout_s
    while wanted not in read and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            read += chunk
    return read


@pytest.mark.timeout(120)
def test_an_engine_whose_stderr_is_not_read_serves_and_says_what_it_dropped():
    reader, writer = os.pipe()
    fcntl.fcntl(writer, fcntl.F_SETPIPE_SZ, 4096)  # the smallest pipe: a few dozen lines fill it
    port = free_port()
    command = [sys.executable, "-m", "engine.cli", "--log-level", "DEBUG", "serve", "--backend", "sim"]
    command += ["--time-scale", "0.01", "--workers", "1", "--port", str(port)]
    command += [
        "--client-listen",
        f"tcp://127.0.0.1:{free_port()}",
        "--worker-listen",
        f"tcp://127.0.0.1:{free_port()}",
    ]
    engine = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=writer, start_new_session=True)
    os.close(writer)
    http = f"http://127.0.0.1:{port}"
    try:
        worker = _ready_worker(http, engine)
        # far more lines than the pipe and the queue hold, nobody reading them
        for _ in range(1500):
            assert b" 400 " in _malformed(port)
        assert _health(http)["status"] == "alive"
        assert _image(http)["data"]
        # its replacement writes to the same stderr: it waited on its first line, and never served
        os.kill(worker, signal.SIGKILL)
        _ready_worker(http, engine, not_pid=worker)
        assert _image(http)["data"]
        said = _read_until(reader, b"log lines dropped", 60)
        dropped = [line for line in said.decode(errors="replace").splitlines() if "log lines dropped" in line]
        assert len(dropped) == 1, said[-2000:]
        assert "WARNING argus.log" in dropped[0]
    finally:
        if engine.poll() is None:
            engine.send_signal(signal.SIGTERM)
        os.set_blocking(reader, False)
        # the engine writes what it holds as it stops: read on, or it gives up on the pipe only after
        # engine/logs/thread.py's STALL_S
        deadline = time.monotonic() + 60
        while engine.poll() is None and time.monotonic() < deadline:
            if select.select([reader], [], [], 0.2)[0] and not os.read(reader, 65536):
                break
        if engine.poll() is None:
            os.killpg(engine.pid, signal.SIGKILL)
        engine.wait()
        os.close(reader)
