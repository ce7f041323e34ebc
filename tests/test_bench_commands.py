"""`argus bench worker` and `argus bench engine` run end to end at a tiny size and write their JSON.

Real processes and sockets, as at full size; no assertion on any timing.
"""

import json
import math
import subprocess
import sys

from engine_process import ROOT


def _bench(tmp_path, *args: str, timeout_s: float = 150.0) -> tuple[dict, str]:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "bench", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return json.loads(out.read_text()), proc.stdout


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_worker_bench_writes_levels_and_overhead(tmp_path):
    # 26 steps: the smallest N that still has K=25 below it
    data, stdout = _bench(tmp_path, "worker", "--steps", "26", "--repeats", "1")
    assert data["steps"] == 26
    assert set(data["levels"]) == {"0", "10", "25"}
    for level in data["levels"].values():
        assert _positive(level["s_per_image"]) and _positive(level["ratio_to_k0"])
    assert data["levels"]["0"]["ratio_to_k0"] == 1.0
    assert _positive(data["overhead_ratio"])
    assert data["levels"]["25"]["steps_run"] == 1
    assert "overhead ratio" in stdout and "worker K=25" in stdout


def test_engine_bench_writes_both_doors(tmp_path):
    data, stdout = _bench(
        tmp_path,
        "engine",
        "--duration-s",
        "0.3",
        "--rounds",
        "1",
        "--latency-s",
        "0.3",
        "--warmup-s",
        "0.1",
    )
    for door in ("zmq", "http"):
        for key in ("engine_rps", "baseline_rps", "ratio", "engine_p99_ms"):
            assert _positive(data[door][key]), (door, key, data[door].get(key))
    assert data["simulated"] is True
    assert "SIMULATED" in stdout
