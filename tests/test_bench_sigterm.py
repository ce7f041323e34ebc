"""A benchmark stopped by SIGTERM or Ctrl-C stops the servers it started and removes its temporary directory; Ctrl-C
says so in one line, not a traceback."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine_process import ROOT
from loadgen.bench.proc import children_of


def _running(pid: int, command: str) -> bool:
    try:
        return command in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_the_engine_and_the_baseline(tmp_path, stop):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    output = tmp_path / "bench.out"
    command = [sys.executable, "-m", "engine.cli", "bench", "engine", "--doors", "zmq", "--rounds", "1"]
    command += ["--duration-s", "60", "--warmup-s", "0", "--concurrency", "4"]
    with open(output, "w") as out:
        bench = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(scratch)}
        )
    servers: list[int] = []
    try:
        # the engine and the bare baseline both run, and the measurement has begun
        while "rounds of" not in output.read_text():
            assert bench.poll() is None, output.read_text()
            time.sleep(0.1)
        servers = children_of(bench.pid)
        assert len(servers) == 2
        bench.send_signal(stop)
        assert bench.wait(60) == 128 + stop, output.read_text()
        if stop == signal.SIGINT:  # was a KeyboardInterrupt traceback
            assert output.read_text().endswith("argus bench engine: interrupted\n"), output.read_text()
        assert not [pid for pid in servers if _running(pid, "engine.cli") or _running(pid, "baselines")]
        assert list(scratch.iterdir()) == []
    finally:
        if bench.poll() is None:
            bench.kill()
        for pid in servers:  # what an old bench left behind, not to outlive the test
            if _running(pid, "engine.cli") or _running(pid, "baselines"):
                os.kill(pid, signal.SIGKILL)
