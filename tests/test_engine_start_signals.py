"""SIGTERM or SIGINT as `argus serve` starts, before its event loop handles them, stops it as one later does: exit 0,
a line saying so and no traceback, no worker started, no temporary folder left."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.profiles import DATA_DIR
from engine.stop_signals import HeldStopSignals
from engine_process import ROOT, free_port


def open_when_read(fifo: Path, process: subprocess.Popen, timeout_s: float = 60.0) -> int:
    """The write end of `fifo`, once `process` opens it to read (it is then inside that read)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        assert process.poll() is None, "the engine exited before reading its latency profile"
        assert time.monotonic() < deadline, "the engine never read its latency profile"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_the_engine_is_built_stops_it_cleanly(tmp_path, signum):
    # the latency profile is read as the engine is built, after its temporary folder is made and its sockets bound:
    # from a FIFO, the build waits there until the test writes it, the signal sent meanwhile
    fifo = tmp_path / "latency.json"
    os.mkfifo(fifo)
    temp = tmp_path / "temp"
    temp.mkdir()
    log_path = tmp_path / "engine.log"
    command = [
        *(sys.executable, "-m", "engine", "serve", "--backend", "sim", "--workers", "2"),
        *("--port", str(free_port()), "--latency-profile", str(fifo)),
        *("--client-listen", f"tcp://127.0.0.1:{free_port()}", "--worker-listen", f"tcp://127.0.0.1:{free_port()}"),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(temp)},
            start_new_session=True,
        )
    try:
        writer = open_when_read(fifo, process)
        assert [path.name[:6] for path in temp.iterdir()] == ["argus-"]  # made: there is a folder to leave
        process.send_signal(signum)
        os.set_blocking(writer, True)
        with open(writer, "wb") as profile:
            profile.write((DATA_DIR / "sdxl_a100.json").read_bytes())
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    log = log_path.read_text()
    assert f"{signum.name} as the engine started: stopping before it serves" in log
    assert "Traceback" not in log and "HTTP API listening" not in log
    assert list(temp.iterdir()) == []
    with pytest.raises(ProcessLookupError):  # no worker was started: none is left in the engine's group
        os.killpg(process.pid, 0)


def test_held_stop_signals_are_kept_then_given_back():
    found = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    held = HeldStopSignals()
    signal.raise_signal(signal.SIGTERM)  # kept: this process goes on
    signal.raise_signal(signal.SIGINT)
    assert held.received is signal.SIGTERM  # the first
    held.release(deliver=False)
    assert {signum: signal.getsignal(signum) for signum in found} == found


def test_a_command_other_than_serve_gets_a_held_signal_as_python_would():
    held = HeldStopSignals()
    signal.raise_signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        held.release(deliver=True)
