"""A load process of `argus bench scale` that starts after its --start-at keeps the schedule the parent measures by.

The parent times the engine's CPU from --start-at; a load process that came up late (a busy machine) had started
its schedule when it got there, 0.8 s later here, and said nothing: its sends were "on time".
"""

import json
import subprocess
import sys
import time

import pytest

from engine_process import ROOT
from loadgen.bench.ports import LOOPBACK, free_port
from loadgen.bench.subprocesses import python_module, spawn


@pytest.mark.timeout(60)
# 3 s: the process comes up after the window (0.5 s of warm-up, then 1 s) has passed, as on a loaded machine: the
# sends due in it were counted late by when they went, none then
@pytest.mark.parametrize("late_by_s", [0.8, 3.0])
def test_a_load_process_started_late_sends_what_is_due_and_counts_it_late(tmp_path, late_by_s):
    address = f"tcp://{LOOPBACK}:{free_port()}"
    echo = spawn(
        python_module("loadgen.bench.baselines", "zmq-echo", "--bind", address, "--image-bytes", "64"), tmp_path, "echo"
    )
    try:
        deadline = time.monotonic() + 30.0
        while "ready" not in echo.log_tail() and time.monotonic() < deadline:
            echo.check_alive()
            time.sleep(0.05)
        out = tmp_path / "load.json"
        warmup_s, rate = 0.5, 200.0
        subprocess.run(
            [
                sys.executable,
                "-m",
                "loadgen.bench.scale_load",
                *("--address", address, "--rate", str(rate), "--warmup-s", str(warmup_s), "--duration-s", "1"),
                *("--start-at", str(time.time() - late_by_s), "--size", "64", "--drain-s", "10", "--out", str(out)),
            ],
            cwd=ROOT,
            check=True,
            timeout=30,
        )
    finally:
        echo.stop()
    result = json.loads(out.read_text())
    assert result["sent"] == rate * (warmup_s + 1) and result["unanswered"] == 0
    # the window began late_by_s - warmup_s before the process sent anything: its first sends due in it are that late
    assert max(result["send_late_ms"]) >= (late_by_s - warmup_s) * 1000.0
