"""The chaos bench's heading and the compare bench's plot title count the workers in words: one worker, not workers."""

import argparse

from loadgen.bench import chaos_bench, compare_bench

CHAOS = {"time_scale": 0.1, "max_batch": 4, "heartbeat_timeout_s": 3.0}


def test_chaos_heading_says_one_worker_singular_and_two_plural():
    # it said "; 1 workers, max batch 4"
    assert "no model runs); 1 worker, max batch 4, --heartbeat-timeout 3" in chaos_bench._heading(
        {**CHAOS, "workers": 1}
    )
    assert "no model runs); 2 workers, max batch 4," in chaos_bench._heading({**CHAOS, "workers": 2})


def test_compare_plot_title_says_one_sim_worker_singular_and_two_plural():
    args = argparse.Namespace(workers=1, trace="traces/code.jsonl", load=1.5, slo_ms=15000)
    # it said "SIMULATED: 1 sim workers, code.jsonl"
    assert compare_bench._plot_title(args).startswith("SIMULATED: 1 sim worker, code.jsonl\nload 1.5x")
    args.workers = 2
    assert compare_bench._plot_title(args).startswith("SIMULATED: 2 sim workers, code.jsonl\n")
