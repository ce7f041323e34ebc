"""`argus bench scale` starts its engine at its fleets' sim time scale: the engine warns of none of its workers."""

import argparse

import pytest

from loadgen.bench import scale_bench


@pytest.mark.timeout(120)
def test_the_engine_plans_at_the_fleets_time_scale(tmp_path):
    # an engine at another --time-scale warns at the first hello of a worker at it, before /ready lists them: one short
    # step is enough. The run writes its processes' logs into tmp_path
    args = argparse.Namespace(
        workers=2,
        fleets=2,
        load_processes=1,
        start_rps=20.0,
        growth=1.5,
        max_rps=20.0,
        step_s=0.3,
        half_s=0.3,
        warmup_s=0.1,
        p99_limit_ms=5000.0,
        size=64,
        ready_timeout_s=60.0,
    )
    scale_bench._measure(args, tmp_path)
    (engine_log,) = tmp_path.glob("engine-*.log")
    logged = engine_log.read_text()
    assert "--time-scale" not in logged, logged
