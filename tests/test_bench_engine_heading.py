"""The engine bench's heading counts what it ran in words a reader takes as said: one worker, one round."""

import argparse
import json

from loadgen.bench import engine_bench


def test_one_worker_and_one_round_are_said_singular(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = argparse.Namespace(workers=1, size=64, rounds=1, duration_s=0.5, latency_s=0.5, json=str(out))
    engine_bench._report(args, [], {})
    printed = capsys.readouterr().out
    # it said "1 workers" and "median of 1 alternating 0.5 s closed-loop runs"
    assert "SIMULATED workers (sim backend" in printed and "; 1 worker, 64x64 images;" in printed
    assert "peak: median of 1 alternating 0.5 s closed-loop run; latency:" in printed
    assert json.loads(out.read_text())["simulated"] is True


def test_several_are_said_plural(capsys):
    args = argparse.Namespace(workers=2, size=64, rounds=3, duration_s=2.0, latency_s=4.0, json=None)
    engine_bench._report(args, [], {})
    printed = capsys.readouterr().out
    assert "; 2 workers, 64x64 images;" in printed and "median of 3 alternating 2 s closed-loop runs;" in printed
