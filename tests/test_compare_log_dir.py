"""`argus bench compare`'s engine logs: without --log-dir no directory of them is left behind; with it, each is
named by its policy."""

import subprocess
import sys
import tempfile
from pathlib import Path

from compare_runs import PROMPTS, compare_argv, run_summary

from engine.cli import build_parser
from loadgen.bench import compare_bench

ROOT = Path(__file__).resolve().parents[1]


def test_the_engine_logs_go_with_the_run(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    log_dirs = []

    async def one_policy(policy, args, schedule, prompts, width, height, log_dir):
        assert log_dir.is_dir()
        log_dirs.append(log_dir)
        return [], run_summary(len(schedule))

    monkeypatch.setattr(compare_bench, "_one_policy", one_policy)
    args = build_parser().parse_args(compare_argv(tmp_path))
    assert compare_bench.run(args) == 0
    assert len(log_dirs) == 2 and log_dirs[0].parent == scratch
    assert list(scratch.iterdir()) == []


def test_the_engine_logs_kept_are_named_by_policy(tmp_path):
    """--log-dir held engine-PORT.log files: which policy each was, nothing said."""
    trace = tmp_path / "trace.txt"
    # 0.2/s, below 1.3 x one worker's 0.196/s: thinning keeps every arrival
    trace.write_text("".join(f"{i * 5000}\n" for i in range(3)))
    logs = tmp_path / "logs"
    argv = ["bench", "compare", "--policies", "argus,clipper-ht", "--workers", "1"]
    argv += ["--trace", str(trace), "--prompts", str(PROMPTS), "--log-dir", str(logs), "--time-scale", "0.02"]
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.name for path in logs.iterdir()) == ["engine-argus.log", "engine-clipper-ht.log"]
    # stderr is a pipe here, not a terminal: no progress bar redrawn into it
    assert "answered" not in result.stderr and "req/s" not in result.stderr
