"""`argus bench scale` fails when its engine dies, saying so in one line (ChildDied): the requests a dead engine leaves
unanswered are not saturation."""

import argparse
import tempfile

import pytest

from loadgen.bench import scale_bench
from loadgen.bench.subprocesses import ChildDied


@pytest.mark.timeout(120)
def test_an_engine_that_dies_mid_ramp_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the copy of its log goes
    # the load generators give up on a dead engine's replies soon, not after the 30 s a slow engine is allowed
    monkeypatch.setattr(scale_bench, "DRAIN_S", 0.5)
    real_step = scale_bench._step
    steps = []

    def step_after_the_engine_died(args, engine, *rest):
        steps.append(args)
        if len(steps) == 2:
            engine.child.process.kill()
            engine.child.process.wait()
        return real_step(args, engine, *rest)

    monkeypatch.setattr(scale_bench, "_step", step_after_the_engine_died)
    args = argparse.Namespace(
        workers=2,
        fleets=1,
        load_processes=1,
        start_rps=20.0,
        growth=1.5,
        max_rps=100.0,
        step_s=0.5,
        half_s=0.5,
        warmup_s=0.1,
        p99_limit_ms=200.0,
        size=64,
        ready_timeout_s=60.0,
    )
    with pytest.raises(ChildDied, match=r"^its engine-\d+ process \(pid \d+\) was killed by SIGKILL"):
        scale_bench._measure(args, tmp_path)
