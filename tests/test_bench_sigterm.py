"""A benchmark stopped by SIGTERM or Ctrl-C stops the servers it started and removes its temporary directory; Ctrl-C
says so in one line, not a traceback."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from waiting import wait_for

from engine.system.proc_reads import children_of, process_cpu_s, read_command, stat_fields
from engine_process import ROOT


@contextlib.contextmanager
def _bench_under_way(tmp_path: Path, args: list[str], begun: str, servers_run: tuple[str, ...]):
    """`argus bench ARGS`, with a temporary directory of its own, once `begun` is in its output: the process, its
    output file, that directory and the servers it started. Killed at the end if it still runs, and with it any of
    those servers still running one of `servers_run`, not to outlive the test."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    output = tmp_path / "bench.out"
    command = [sys.executable, "-m", "engine.cli", "bench", *args]
    with open(output, "w") as out:
        bench = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(scratch)}
        )
    servers: list[int] = []
    try:
        while begun not in output.read_text():
            assert bench.poll() is None, output.read_text()
            time.sleep(0.1)
        servers = children_of(bench.pid)
        yield bench, output, scratch, servers
    finally:
        if bench.poll() is None:
            bench.kill()
        for pid in _still_serving(servers, servers_run):
            os.kill(pid, signal.SIGKILL)


def _still_serving(servers: list[int], commands: tuple[str, ...]) -> list[int]:
    return [pid for pid in servers if any(command in read_command(pid) for command in commands)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_the_engine_and_the_baseline(tmp_path, stop):
    args = ["engine", "--doors", "zmq", "--rounds", "1", "--duration-s", "60", "--warmup-s", "0", "--concurrency", "4"]
    # the engine and the bare baseline both run, and the measurement has begun
    servers_run = ("engine.cli", "baselines")
    with _bench_under_way(tmp_path, args, "1 round of", servers_run) as (bench, output, scratch, servers):
        assert len(servers) == 2
        bench.send_signal(stop)
        assert bench.wait(60) == 128 + stop, output.read_text()
        # Ctrl-C's was a KeyboardInterrupt traceback; SIGTERM's, 'Task exception was never retrieved' and one
        said = output.read_text()
        ends = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}[stop]
        assert said.endswith(f"argus bench engine: {ends}\n") and "Traceback" not in said, said
        assert not _still_serving(servers, servers_run)
        assert list(scratch.iterdir()) == []


def _solving_cpu_s(session: int) -> float:
    """CPU seconds of the busiest process of the session that has OR-Tools loaded: once past its imports (about a
    second), it solves back to back."""
    in_session = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _session(pid) == session]
    return max((process_cpu_s(pid) for pid in in_session if _has_loaded(pid, "ortools")), default=0.0)


def _session(pid: int) -> int | None:
    fields = stat_fields(pid)
    return None if fields is None else int(fields[3])


def _has_loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:  # it ended meanwhile
        return False


@pytest.mark.timeout(180)
def test_ctrl_c_stops_the_controller_bench_while_it_solves(tmp_path):
    """SCIP and CBC take SIGINT for themselves while they solve, to stop that solve early: solving back to back in
    the bench's own process, they took a Ctrl-C that landed in a solve (3 in 5 with SCIP, 1 in 5 with CBC), and the
    bench ran on to its end. Three benches, each sent one Ctrl-C as a terminal sends it once it solves: each ends
    at it, in one line, and leaves no process behind."""
    command = [sys.executable, "-m", "engine.cli", "bench", "controller", "--solver", "SCIP", "--workers", "64"]
    benches = []
    try:
        for n in range(3):
            output = tmp_path / f"bench-{n}.out"
            with open(output, "w") as out:
                bench = subprocess.Popen(
                    [*command, "--solves", "1000000"],
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            benches.append((bench, output))
        for bench, output in benches:
            # past its imports (0.5 to 0.9 CPU s) by a second or more: hundreds of solves of 64 workers, some ms each
            assert wait_for(lambda bench=bench: _solving_cpu_s(bench.pid) > 2.0, 120), output.read_text()
            os.killpg(bench.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches its whole foreground group
            assert bench.wait(30) == 128 + signal.SIGINT, output.read_text()
            said = output.read_text()
            assert said.endswith("argus bench controller: interrupted\n") and "Traceback" not in said, said
            with pytest.raises(ProcessLookupError):  # the solving ended with it
                os.killpg(bench.pid, 0)
    finally:
        for bench, _ in benches:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()


@pytest.mark.timeout(120)
def test_sigterm_ends_the_chaos_bench_as_ctrl_c_does(tmp_path):
    """It exited 143 with its engine stopped, but printed 'Unclosed client session': SystemExit, raised wherever the
    signal landed, passed by the HTTP door's session close."""
    args = ["chaos", "--duration", "60", "--kill-every", "0", "--min-kills", "0", "--workers", "2"]
    args += ["--http-share", "0.5"]
    # the load has begun, over both doors
    with _bench_under_way(tmp_path, args, "faults over", ("engine.cli",)) as (bench, output, scratch, servers):
        time.sleep(1.0)
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(60) == 128 + signal.SIGTERM, output.read_text()
        said = output.read_text()
        assert said.endswith("argus bench chaos: terminated\n") and "Unclosed" not in said, said
        assert "Traceback" not in said, said
        assert not _still_serving(servers, ("engine.cli",))
        assert list(scratch.iterdir()) == []
