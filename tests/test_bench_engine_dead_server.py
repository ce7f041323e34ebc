"""`argus bench engine` fails at once when its engine dies during a measurement, in one line naming its exit (exit 1):
its clients waited 30 s for replies, then said only that the engine stopped answering; after that it ended in a
RuntimeError traceback with the log's tail under it, the same tail printed above it as a warning."""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from engine.system.proc_reads import children_of, live_parent, read_command
from engine.system.temp_folders import LOCK_FILE
from engine_process import ROOT
from loadgen.bench import engine_bench
from loadgen.bench.subprocesses import ChildDied

KILLED = r"was killed by SIGKILL \(a kill -9, or the kernel's out-of-memory killer\)"


@pytest.mark.timeout(90)
def test_an_engine_that_dies_as_a_door_is_measured_fails_the_run_naming_its_exit(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the copy of its log goes
    real_workers_of = engine_bench.local_workers_of

    def workers_of_an_engine_then_killed(engine_pid):
        workers = real_workers_of(engine_pid)
        os.kill(engine_pid, signal.SIGKILL)  # the bench's own child, started by this test's run
        return workers

    monkeypatch.setattr(engine_bench, "local_workers_of", workers_of_an_engine_then_killed)
    args = argparse.Namespace(
        doors="zmq",
        workers=1,
        rounds=1,
        duration_s=1.0,
        latency_s=1.0,
        warmup_s=0.0,
        concurrency=4,
        http_concurrency=None,  # left out, as the ZeroMQ door alone is measured
        size=64,
        json=None,
    )
    with pytest.raises(ChildDied, match=rf"^its engine-\d+ process \(pid \d+\) {KILLED}; "):
        engine_bench.run(args)


def _descendants(pid: int) -> list[int]:
    children = children_of(pid)
    return children + [grandchild for child in children for grandchild in _descendants(child)]


@pytest.mark.timeout(120)
def test_the_command_ends_in_one_line_with_the_engines_log_kept_and_nothing_left_running(tmp_path):
    scratch = tmp_path / "scratch"  # its temporary folders, and the copy of the engine's log
    scratch.mkdir()
    output = tmp_path / "bench.out"
    # rounds long enough that the engine is killed in the middle of them, not after them
    command = [sys.executable, "-m", "engine", "bench", "engine", "--doors", "zmq", "--workers", "1"]
    command += ["--rounds", "2", "--duration-s", "5", "--latency-s", "1", "--warmup-s", "0", "--size", "64"]
    with open(output, "w") as out:
        bench = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(scratch)}
        )
    try:
        while "ZeroMQ: " not in output.read_text():  # the door's rounds began
            assert bench.poll() is None, output.read_text()
            time.sleep(0.1)
        started = _descendants(bench.pid)
        (engine,) = [pid for pid in children_of(bench.pid) if "serve" in read_command(pid).split("\0")]
        os.kill(engine, signal.SIGKILL)
        _, stderr = bench.communicate(timeout=90)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 1, (stderr, output.read_text())
    said = re.fullmatch(
        rf"argus bench engine: error: its engine-\d+ process \(pid {engine}\) {KILLED}; (it logged nothing|its log is"
        r" (\S+))\n",
        stderr,
    )
    assert said, stderr
    # its death said once: the log's tail was printed above the error line too, as a warning of an unclean exit
    assert "warning" not in output.read_text()
    # the bench's temporary folder removed as before; the engine's log, if it wrote one, copied out of it. The killed
    # engine's own folder (its IPC socket) is left for the next engine to remove (engine/system/temp_folders.py)
    left = [path.name for path in scratch.iterdir() if not (path / LOCK_FILE).exists()]
    assert left == ([] if said[2] is None else [os.path.basename(said[2])])
    # its workers, its MILP process, the ZeroMQ baseline: stopped with it (a killed process is reaped meanwhile)
    assert len(started) >= 3
    deadline = time.monotonic() + 30
    while any(live_parent(pid) is not None for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in started if live_parent(pid) is not None] == []
