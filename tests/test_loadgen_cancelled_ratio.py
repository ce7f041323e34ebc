"""A run stopped early: the requests it cancelled are counted once, as cancelled, and left out of the SLO violation
ratio, against a real engine through the real `argus loadgen`."""

import json
import signal
import subprocess
import sys

import pytest
from waiting import wait_for

from engine_process import ROOT, start_engine
from loadgen.records import VIOLATIONS


@pytest.mark.timeout(180)
def test_a_run_stopped_early_leaves_the_requests_it_cancelled_out_of_the_violation_ratio(tmp_path):
    """SIGTERM with requests in flight: they were counted in the ratio's denominator without being a violation or a
    success, so a run stopped with 8 in flight, 1 rejected and 1 served said 10% where it was 50%."""
    # one simulated worker taking seconds an image, one image admitted at a time: the sends after the first are
    # refused (violations) while it runs, and it is in flight when the run is stopped
    engine = start_engine(tmp_path, "--max-queue", "1", backend="sim", workers=1)
    records, summary = tmp_path / "records.jsonl", tmp_path / "summary.json"
    command = [sys.executable, "-m", "engine.cli", "loadgen", "--url", engine.http, "--rate", "10", "--duration-s"]
    command += ["60", "--size", "64x64", "--slo-ms", "30000", "--records", str(records), "--json", str(summary)]
    try:
        run = subprocess.Popen(command + ["--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert wait_for(lambda: records.exists() and len(records.read_text().splitlines()) >= 2)
            run.send_signal(signal.SIGTERM)
            printed, said = run.communicate(timeout=60)
        finally:
            run.kill()
    finally:
        engine.stop()
    assert run.returncode == 0, said.decode()
    written = json.loads(summary.read_text())
    outcomes, sent = written["outcomes"], written["sent"]
    violations = sum(outcomes[name] for name in VIOLATIONS)
    assert sent == sum(outcomes.values()) == len(records.read_text().splitlines())
    assert outcomes["cancelled"] >= 1 and outcomes["rejected"] >= 1, outcomes
    assert written["slo_violation_ratio"] == violations / (sent - outcomes["cancelled"])
    assert f"of the {sent - outcomes['cancelled']} not cancelled" in printed.decode()
