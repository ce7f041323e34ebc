"""The benches count what they ran in words: one worker, one thread, one repeat, where "1 workers" was said."""

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


def test_worker_bench_says_one_thread_and_one_repeat_singular():
    from loadgen.bench import worker_bench

    args = argparse.Namespace(size=64, steps=50, threads=1, repeats=1)
    # it said "1 torch thread(s), 1 interleaved repeats"
    assert "N=50 steps, 1 torch thread, 1 interleaved repeat; s/image" in worker_bench._run_line(args)
    args.threads, args.repeats = 2, 20
    assert "N=50 steps, 2 torch threads, 20 interleaved repeats; s/image" in worker_bench._run_line(args)
