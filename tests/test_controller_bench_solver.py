"""`argus bench controller --solver` takes only a MIP backend: anything else would time something other than the
allocation MILP (the route-LP fallback for an unknown name, the LP relaxation for an LP backend). It is refused before
OR-Tools is asked, which answered an unknown name with its own log lines on stderr ahead of argus's error."""

import subprocess
import sys

import pytest

from engine.cli import build_parser
from engine_process import ROOT


@pytest.mark.parametrize("solver", ["NOSUCH", "GLOP", "BOP"])  # BOP: 0/1 variables only, it solved none
def test_a_solver_that_is_no_mip_backend_is_refused_before_or_tools_is_asked(solver):
    argv = [sys.executable, "-m", "engine.cli", "bench", "controller", "--solver", solver, "--solves", "1"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    # argparse's usage, then its one line: no line of OR-Tools' (absl's "WARNING: All log messages before ...")
    assert proc.stderr.startswith("usage: argus bench controller "), proc.stderr
    error = proc.stderr.splitlines()[-1]
    assert error.startswith(f"argus bench controller: error: argument --solver: invalid choice: '{solver}'")
    assert "absl" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("solver", ["CBC", "SCIP", "HIGHS", "SAT"])
def test_each_mip_backend_offered_is_timed(solver):
    """HiGHS writes a banner on stdout at each solve, where the solving process answers in JSON: `--solver HIGHS`
    ended in a JSONDecodeError traceback."""
    argv = [sys.executable, "-m", "engine.cli", "bench", "controller", "--solver", solver, "--solves", "1"]
    proc = subprocess.run([*argv, "--workers", "8"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    (row,) = [line.split() for line in proc.stdout.splitlines() if line.split()[:2] == ["8", "6"]]  # 8 workers
    assert row[-1] == "1/1"  # its one solve optimal


def test_a_solver_is_named_in_any_case():
    assert build_parser().parse_args(["bench", "controller", "--solver", "highs"]).solver == "HIGHS"
