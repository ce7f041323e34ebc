"""`argus bench compare --records-dir`: a short real run (engines with sim workers), one record a request per policy."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pictures import opens_as_png

from loadgen.records import OUTCOMES
from loadgen.report import read_records
from loadgen.stats import median, percentile

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT.parent / "shared" / "data" / "prompts" / "diffusiondb_5k.txt"
TIME_SCALE = 0.01


def test_each_policy_writes_one_record_a_request_on_the_simulated_clock(tmp_path):
    # 30 requests over a simulated minute: the busiest minute is the whole trace, thinned to 1.3 x one worker's
    # capacity (about 13 of them)
    trace = tmp_path / "trace.txt"
    trace.write_text("".join(f"{i * 2000}\n" for i in range(30)))
    records_dir = tmp_path / "records"
    result_json = tmp_path / "compare.json"
    command = [
        sys.executable,
        "-m",
        "engine.cli",
        "bench",
        "compare",
        "--policies", "argus,clipper-ht",
        "--workers", "1",
        "--trace", str(trace),
        "--prompts", str(PROMPTS),
        "--time-scale", str(TIME_SCALE),
        "--log-dir", str(tmp_path / "logs"),
        "--records-dir", str(records_dir),
        "--json", str(result_json),
        "--plot", str(tmp_path / "compare.png"),
        "--seed", "3",
    ]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=240)

    assert opens_as_png(tmp_path / "compare.png")
    written = json.loads(result_json.read_text())
    # what drew the thinning and the images' seeds: a JSON without it could be of any --seed
    assert written["config"]["seed"] == 3
    results = written["policies"]
    assert sorted(path.name for path in records_dir.iterdir()) == ["argus.jsonl", "clipper-ht.jsonl"]
    for policy, summary in results.items():
        records = read_records(records_dir / f"{policy}.jsonl")
        assert len(records) == summary["requests"] > 0
        assert [r["id"] for r in records] == list(range(len(records)))
        assert all(r["outcome"] in OUTCOMES for r in records)
        assert all(r["simulated"] for r in records if r["n_images"])  # sim workers: every image says so
        # the records' times are the summary's: both on the simulated clock
        served = [r["latency_ms"] for r in records if r["outcome"] in ("ok", "late")]
        assert percentile(served, 50, empty=None) == summary["p50_ms"]
        outside = [r["latency_ms"] - r["queue_ms"] - r["run_ms"] for r in records if r["outcome"] in ("ok", "late")]
        assert summary["unsimulated_p50_ms"] == pytest.approx(median(outside))
        assert max(r["scheduled_at"] for r in records) > 30.0  # simulated seconds, not the 0.6 s of wall time
        # how far behind its schedule a request was sent, also on the simulated clock
        lag_ms = max((r["sent_at"] - r["scheduled_at"]) * 1000.0 for r in records)
        assert summary["max_send_lag_ms"] == pytest.approx(lag_ms)


def test_a_mistyped_policy_is_refused_before_any_engine_runs(tmp_path):
    command = [sys.executable, "-m", "engine.cli", "bench", "compare", "--policies", "argus,clipper_ha"]
    command += ["--json", str(tmp_path / "compare.json"), "--log-dir", str(tmp_path / "logs")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "--policies takes distinct names from argus, clipper-ha" in result.stderr
    assert not (tmp_path / "logs").exists()  # argus was not run first, to be thrown away


def test_records_that_cannot_be_written_are_one_line_and_cost_no_policys_results(tmp_path):
    """A policy's records that could not be written (here a directory in the file's place; a full disk likewise)
    ended the bench in an OSError traceback, before that policy's figures reached --json."""
    trace = tmp_path / "trace.txt"
    trace.write_text("".join(f"{i * 2000}\n" for i in range(30)))
    records_dir, result_json = tmp_path / "records", tmp_path / "compare.json"
    (records_dir / "argus.jsonl").mkdir(parents=True)
    command = [sys.executable, "-m", "engine.cli", "bench", "compare", "--policies", "argus", "--workers", "1"]
    command += ["--trace", str(trace), "--prompts", str(PROMPTS), "--time-scale", str(TIME_SCALE)]
    command += ["--records-dir", str(records_dir), "--json", str(result_json)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.endswith(
        f"argus bench compare: could not write the records to {records_dir / 'argus.jsonl'}: Is a directory\n"
    )
    assert json.loads(result_json.read_text())["policies"]["argus"]["requests"] > 0


def test_a_plot_that_cannot_be_written_is_one_line_after_the_json(tmp_path):
    """It was an OSError traceback, and the JSON's last writing (with the verdicts) came after the plot."""
    trace = tmp_path / "trace.txt"
    trace.write_text("".join(f"{i * 2000}\n" for i in range(30)))
    result_json = tmp_path / "compare.json"
    command = [sys.executable, "-m", "engine.cli", "bench", "compare", "--policies", "argus,clipper-ht"]
    command += ["--workers", "1", "--trace", str(trace), "--prompts", str(PROMPTS), "--time-scale", str(TIME_SCALE)]
    command += ["--json", str(result_json), "--plot", "/dev/full"]  # a full disk
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    said = "argus bench compare: could not write the plot to /dev/full: No space left on device\n"
    assert result.stderr.endswith(said)
    assert "argus_verdict" in json.loads(result_json.read_text())["policies"]["clipper-ht"]
