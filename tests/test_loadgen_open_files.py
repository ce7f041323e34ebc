"""`argus loadgen` over HTTP holds a connection, a descriptor, for each request in flight: under a low soft limit on
open files it raises its own, and under a low hard limit it says so and records the sends that failed for it as its
own failure, not the engine's."""

import json
import resource
import subprocess
import sys

import pytest

from engine_process import ROOT, start_engine

LOW_LIMIT = 128
REQUESTS = 200  # all in flight at once: sim workers at SD-XL speed answer none within the drain


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("open-files"), backend="sim")
    yield engine
    assert engine.stop() == 0


def _run(engine, tmp_path, soft: int, hard: int) -> tuple[dict, str]:
    summary = tmp_path / "summary.json"
    command = [sys.executable, "-m", "engine.cli", "loadgen", "--url", engine.http, "--rate", "400"]
    command += ["--max-requests", str(REQUESTS), "--drain-s", "2", "--no-progress", "--json", str(summary)]

    def limit() -> None:  # as a shell's ulimit leaves it
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert done.returncode == 0, done.stderr
    return json.loads(summary.read_text()), done.stderr


@pytest.mark.timeout(120)
def test_a_low_soft_limit_costs_no_request(engine, tmp_path):
    """Under a soft limit of 1,024 (a shell's usual), 559 of 1,567 requests sent at 400/s to slow workers were
    connection_error: the generator's own sends, failed for want of a descriptor."""
    summary, _ = _run(engine, tmp_path, LOW_LIMIT, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    assert summary["sent"] == REQUESTS
    assert summary["error_codes"] == {"client_timeout": REQUESTS}


@pytest.mark.timeout(120)
def test_a_low_hard_limit_is_said_and_its_failures_are_the_clients(engine, tmp_path):
    summary, said = _run(engine, tmp_path, LOW_LIMIT, LOW_LIMIT)
    assert f"may hold at most {LOW_LIMIT} open files" in said
    codes = summary["error_codes"]
    assert codes["client_out_of_files"] > 0 and "connection_error" not in codes
    assert sum(codes.values()) == summary["sent"] == REQUESTS
