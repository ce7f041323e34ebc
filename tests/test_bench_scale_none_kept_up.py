"""`argus bench scale` whose engine keeps up with none of its steps ends in one line, exit 1: it ended in a
RuntimeError traceback, as a default run did on a busy 2-core machine (the first step, 250 req/s to 1,024 workers,
past the p99 limit)."""

import subprocess
import sys

import pytest

from engine_process import ROOT


@pytest.mark.timeout(120)
def test_no_step_kept_up_is_one_line_and_exit_1():
    # a p99 limit of a microsecond, which no step meets
    flags = ["--workers", "4", "--fleets", "1", "--load-processes", "1", "--start-rps", "50", "--max-rps", "50"]
    flags += ["--step-s", "1", "--warmup-s", "0.2", "--p99-limit-ms", "0.001"]
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "bench", "scale", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == "argus bench scale: error: the engine did not keep up with 50 req/s: lower --start-rps\n"
