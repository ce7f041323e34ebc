"""A worker that `argus profile latency` (or `argus profile quality`, `argus bench worker`) drives and that dies under
it (a kill -9, the OOM killer) ends the command in one line naming the worker, how it ended and its log, exit 1: it
ended in a RuntimeError traceback ("worker exited with -9"), before that in zmq's "Host unreachable"."""

import argparse
import os
import re
import signal
import subprocess
import tempfile

import pytest
from profile_in_progress import profile_in_its_first_batch

from controller.profile_latency import WorkerProcess, add_worker_arguments
from engine.system.proc_reads import children_of
from loadgen.bench.subprocesses import ChildDied
from protocols.worker_messages import GenerateItem


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_profile_ends_the_command_in_one_line(tmp_path):
    with profile_in_its_first_batch(tmp_path, "engine", stderr=subprocess.PIPE) as (profile, scratch):
        (worker,) = children_of(profile.pid)
        os.kill(worker, signal.SIGKILL)
        _, stderr = profile.communicate(timeout=60)
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


@pytest.mark.timeout(60)
def test_closing_a_live_worker_the_router_cannot_reach_raises_nothing(tmp_path):
    """close() runs in the `finally` of a failed measurement: its Shutdown refused by the ROUTER (the worker alive but
    its connection not known there, as when it rejoined under load) raised zmq's "Host unreachable" over the error
    that ended the run. The worker is stopped all the same."""
    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    args = parser.parse_args(["--backend", "sim", "--time-scale", "0"])
    worker = WorkerProcess(args, 1, tmp_path)
    worker.handshake()
    worker._identity = b"a connection the ROUTER does not hold"
    worker.close()
    assert not worker.child.alive()
