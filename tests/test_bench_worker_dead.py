"""A worker that `argus profile latency` (or `argus profile quality`, `argus bench worker`) drives and that dies under
it (a kill -9, the OOM killer) ends the command in one line naming the worker, how it ended and its log, exit 1: it
ended in a RuntimeError traceback ("worker exited with -9"), before that in zmq's "Host unreachable"."""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from controller.profile_latency import WorkerProcess, add_worker_arguments
from engine_process import ROOT
from loadgen.bench.proc import children_of
from loadgen.bench.subprocesses import ChildDied
from protocols.worker_messages import GenerateItem


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_profile_ends_the_command_in_one_line(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    output = tmp_path / "profile.out"
    # at --time-scale 10 the first batch takes a minute: the worker is killed in the middle of it
    command = [sys.executable, "-m", "engine", "profile", "latency", "--backend", "sim", "--time-scale", "10"]
    command += ["--out", str(tmp_path / "profile.json")]
    with open(output, "w") as out:
        profile = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(scratch)}
        )
    try:
        while "warming up" not in output.read_text():  # the worker said hello
            assert profile.poll() is None, output.read_text()
            time.sleep(0.1)
        (worker,) = children_of(profile.pid)
        os.kill(worker, signal.SIGKILL)
        _, stderr = profile.communicate(timeout=60)
    finally:
        if profile.poll() is None:
            profile.kill()
    assert profile.returncode == 1, stderr
    said = (
        f"argus profile latency: error: its sim worker (pid {worker}) was killed by SIGKILL (a kill -9, or the"
        " kernel's out-of-memory killer); it logged nothing\n"
    )
    assert stderr == said
    assert list(scratch.iterdir()) == []  # nothing logged, nothing kept: the temporary folder removed as before
    assert not (tmp_path / "profile.json").exists()


@pytest.mark.timeout(60)
def test_a_worker_that_died_between_batches_is_said_to_have_died_with_its_log_kept(tmp_path, monkeypatch):
    """Between batches the ROUTER refuses to send to it (mandatory routing): said as its death too. Its log, in the
    folder the command removes as it ends, is copied out to be read."""
    kept = tmp_path / "kept"
    kept.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(kept))
    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    args = parser.parse_args(["--backend", "sim", "--time-scale", "0"])
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    with WorkerProcess(args, 1, log_dir) as worker:
        worker.handshake()
        item = GenerateItem("a", "a red fox", 1, None)
        worker.generate(0, 50, 64, 5.0, [item])  # served: the ROUTER knows it
        with open(worker.child.log_path, "a") as log:
            log.write("what the worker said last\n")
        worker.child.process.kill()
        worker.child.process.wait()
        with pytest.raises(ChildDied) as died:
            worker.generate(0, 50, 64, 5.0, [item])
    pid = worker.child.process.pid
    (copy,) = kept.iterdir()
    said = f"its sim worker (pid {pid}) was killed by SIGKILL (a kill -9, or the kernel's out-of-memory killer);"
    assert re.fullmatch(re.escape(f"{said} its log is {copy}"), str(died.value))
    assert copy.read_text().endswith("what the worker said last\n")
