"""`argus bench compare` fails when a policy's engine dies, saying so in one line (ChildDied): its requests timing out
are not the policy's result."""

import argparse
import asyncio
import os
import signal
import tempfile

import pytest

from engine.system.proc_reads import children_of, read_command
from loadgen import run as run_module
from loadgen.arrivals import Arrival
from loadgen.bench import compare_bench
from loadgen.bench.subprocesses import ChildDied

DIED = r"^its engine-argus process \(pid \d+\) was killed by SIGKILL \(a kill -9, or the kernel's out-of-memory"
DIED += r" killer\); "


@pytest.mark.timeout(120)
async def test_an_engine_that_dies_during_the_load_fails_the_policy(tmp_path, monkeypatch):
    async def load_while_the_engine_dies(*args, **kwargs):
        # by its command line: a test run before this one in the same process may have left a child of its own
        (engine_pid,) = [pid for pid in children_of(os.getpid()) if "serve" in read_command(pid).split("\0")]
        os.kill(engine_pid, signal.SIGKILL)
        # dead and waitable, but left for the bench to reap, as a crash would be. Not /proc's "Z": the process shows
        # it while its other threads are still exiting, and a poll() then finds it alive
        while os.waitid(os.P_PID, engine_pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            await asyncio.sleep(0.05)
        return [], {"sent": 0}

    monkeypatch.setattr(run_module, "run_load", load_while_the_engine_dies)
    args = argparse.Namespace(backend="sim", time_scale=0.02, slo_ms=15_000.0, workers=1, seed=0, log_dir=tmp_path)
    # its log is named by its policy: engine-PORT.log files in --log-dir did not say which policy each was. In the
    # --log-dir the user keeps, it is named there, not copied
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "nowhere"))  # a copy made fails the test
    with pytest.raises(ChildDied, match=DIED + r"(it logged nothing|its log is " + f"{tmp_path}/engine-argus.log)$"):
        await compare_bench._one_policy("argus", args, [], ["a prompt"], 64, 64, tmp_path)


@pytest.mark.timeout(120)
async def test_an_engine_that_dies_fails_the_policy_then_not_once_its_schedule_is_over(tmp_path, monkeypatch):
    """Checked only after the load, a dead engine's run went on to its last arrival and the drain: the default
    compare's minute and a half of wall time and a minute more, a whole hour at --time-scale 1."""
    real_run_load = run_module.run_load

    async def kill_the_engine_then_load(*args, **kwargs):
        (engine_pid,) = [pid for pid in children_of(os.getpid()) if "serve" in read_command(pid).split("\0")]
        os.kill(engine_pid, signal.SIGKILL)
        return await real_run_load(*args, **kwargs)

    monkeypatch.setattr(run_module, "run_load", kill_the_engine_then_load)
    args = argparse.Namespace(backend="sim", time_scale=0.02, slo_ms=15_000.0, workers=1, seed=0, log_dir=None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a copy of its log, made out of the bench's folder
    # the last arrival an hour of wall time on: a bench that waits for it never ends within the test's timeout
    schedule = [Arrival(0.0), Arrival(3600.0)]
    with pytest.raises(ChildDied, match=DIED):
        await compare_bench._one_policy("argus", args, schedule, ["a prompt"], 64, 64, tmp_path)
