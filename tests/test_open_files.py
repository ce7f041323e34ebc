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


def test_an_engine_under_a_low_hard_limit_says_so(tmp_path):
    """It raised its soft limit as far as the hard one let it and said nothing: at a hard limit of 1,024 it still
    stopped taking workers past about a thousand, without a word."""
    port, client_port, worker_port = free_port(), free_port(), free_port()
    command = [sys.executable, "-m", "engine.cli", "serve", "--workers", "0", "--backend", "sim", "--port", str(port)]
    command += [
        "--client-listen",
        f"tcp://127.0.0.1:{client_port}",
        "--worker-listen",
        f"tcp://127.0.0.1:{worker_port}",
    ]

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_LIMIT * 4, LOW_LIMIT * 4))

    engine = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=low_limit)
    said = []
    try:
        for line in engine.stderr:  # up to the listening line, when SIGTERM is the engine's to handle
            said.append(line)
            if "listening" in line:
                break
    finally:
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=30) == 0
    assert any(f"may hold at most {LOW_LIMIT * 4} open files (ulimit -Hn)" in line for line in said), said
