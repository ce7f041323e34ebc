"""A soft limit on open files lower than a fleet of workers needs: the engine raises its own and takes them all,
answering HTTP meanwhile; a fleet over its hard limit says so in one line and exits 2."""

import resource
import signal
import subprocess
import sys

from test_sim_fleet import start_fleet

from engine_process import ROOT, free_port, start_engine

FLEET = 100
LOW_LIMIT = 64  # under what the engine holds for a fleet of FLEET, with its own descriptors


def test_an_engine_started_under_a_low_soft_limit_takes_more_workers_than_it_allows(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_LIMIT, hard))  # the engine inherits it, as from a shell's
    try:
        engine = start_engine(tmp_path, workers=0, backend="sim", wait=False)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    fleet = start_fleet(tmp_path, engine.worker_address, FLEET, "fleet")
    try:
        assert len(engine.wait_ready(FLEET, timeout_s=60)["workers"]) == FLEET
        assert engine.get("/health")[0] == 200
    finally:
        fleet.send_signal(signal.SIGTERM)
        fleet.wait(timeout=30)
        assert engine.stop() == 0


def test_a_fleet_over_its_hard_limit_says_so_and_exits_2():
    command = [sys.executable, "-m", "engine.cli", "worker", "--connect", "tcp://127.0.0.1:9", "--backend", "sim"]
    command += ["--count", str(FLEET)]

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_LIMIT, LOW_LIMIT))

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, preexec_fn=low_limit)
    assert done.returncode == 2, done.stderr
    assert f"--count {FLEET} needs 264 open files, over this process's hard limit" in done.stderr
    assert "Traceback" not in done.stderr


def start_said(hard_limit: int, *args: str, code: int = 0) -> list[str]:
    """What `argus serve ARGS` under a hard limit on open files logs up to its listening line, when it is stopped, or
    up to its exit, which must be `code`."""
    port, client_port, worker_port = free_port(), free_port(), free_port()
    command = [sys.executable, "-m", "engine.cli", "serve", "--backend", "sim", "--port", str(port), *args]
    command += [
        "--client-listen",
        f"tcp://127.0.0.1:{client_port}",
        "--worker-listen",
        f"tcp://127.0.0.1:{worker_port}",
    ]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard_limit, hard_limit))

    engine = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    said = []
    try:
        for line in engine.stderr:  # up to the listening line, when SIGTERM is the engine's to handle
            said.append(line)
            if "listening" in line:
                break
    finally:
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=30) == code
    return said


def test_an_engine_under_a_low_hard_limit_says_so():
    """It raised its soft limit as far as the hard one let it and said nothing: at a hard limit of 1,024 it still
    stopped taking workers past about a thousand, without a word."""
    said = start_said(LOW_LIMIT * 4, "--workers", "0")
    warned = [line for line in said if f"may hold at most {LOW_LIMIT * 4} open files (ulimit -Hn)" in line]
    assert len(warned) == 1 and " WARNING " in warned[0], said
    assert "--workers 0 and a full queue (--max-queue 1024) need about 2048: raise the hard limit" in warned[0]


def test_a_hard_limit_the_configuration_fits_in_is_told_without_a_warning():
    """Every start under a hard limit below 65,536 warned "raise the hard limit to 65536", a dev engine of 2 workers
    under 20,000 too: that many files take a thousand workers and their clients many times over."""
    said = start_said(4096, "--workers", "2")
    told = [line for line in said if "may hold at most 4096 open files (ulimit -Hn)" in line]
    assert len(told) == 1 and " INFO " in told[0], said
    assert not [line for line in said if " WARNING " in line], said


def test_a_need_set_by_max_connections_is_said_to_be_its():
    """The files --max-connections needs were said to be the full queue's (--max-queue), which needs fewer: the line
    sent its reader to the wrong flag."""
    said = start_said(4096, "--workers", "0", "--max-connections", "4000")
    warned = [line for line in said if "may hold at most 4096 open files (ulimit -Hn)" in line]
    assert len(warned) == 1 and " WARNING " in warned[0], said
    assert "--workers 0 and --max-connections 4000 need about 5024: raise the hard limit" in warned[0]


def test_local_workers_the_hard_limit_has_no_room_for_are_refused_at_start():
    """Under a hard limit of 64 open files, --workers 20 started: six could not be started (`Too many open files`,
    retried), and libzmq aborted the engine as a worker connected (`Too many open files (src/ipc_listener.cpp:297)`,
    SIGABRT). Refused now, before anything starts, naming how many fit: (100 - 64) // 2 = 18."""
    said = start_said(100, "--workers", "20", code=2)
    assert said[-1] == (
        "argus serve: error: --workers 20 would run the engine out of open files as they start: this process may hold"
        " 100 (ulimit -Hn), and the engine keeps about 64 of its own and 2 for each worker, which leaves room for 18:"
        " give at most that, or raise the limit\n"
    ), said
