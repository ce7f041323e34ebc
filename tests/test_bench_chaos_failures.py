"""`argus bench chaos` says why it fails: an engine that dies during the load fails the run at once, naming its exit;
a run that fails its checks says which, where it exited 1 under a table that looked like a pass."""

import argparse
import asyncio
import tempfile

import pytest
from test_chaos import chaos_result

from loadgen.bench import chaos_bench
from loadgen.bench.chaos_bench import ChaosConfig
from loadgen.bench.subprocesses import ChildDied


@pytest.mark.timeout(120)
def test_an_engine_that_dies_during_the_load_fails_the_run_naming_its_exit(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the copy of its log goes
    real_load = chaos_bench._load_with_faults

    async def load_after_the_engine_died(config, plan, engine, engine_pid, progress):
        engine.child.process.kill()
        return await real_load(config, plan, engine, engine_pid, progress)

    monkeypatch.setattr(chaos_bench, "_load_with_faults", load_after_the_engine_died)
    # it ran out the load and the drain, then failed on its /metrics refused (aiohttp's ClientConnectorError)
    config = ChaosConfig(duration_s=10.0, kill_every_s=0.0, min_kills=0, workers=2, drain_s=5.0)
    with pytest.raises(ChildDied, match=r"^its engine-\d+ process \(pid \d+\) was killed by SIGKILL"):
        asyncio.run(asyncio.wait_for(chaos_bench.measure(config, tmp_path), 100))


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({}, None),
        ({"kills": 3}, "3 kills, fewer than --min-kills 5"),
        ({"lost": 2, "duplicates": 1}, "2 requests lost; 1 reply beyond the first for a request"),
        ({"hangs": 2, "hangs_detected": 1}, "1 of 2 hangs not found by the engine"),
        ({"metrics_vs_clients": {"match": False}}, "the engine's argus_requests_total disagrees"),
        ({"engine_exit_code": 1, "engine_log_tail": "the drain failed"}, "the engine exited with 1:\nthe drain failed"),
    ],
)
def test_a_failed_run_says_why(changes, says, tmp_path, monkeypatch, capsys):
    config = ChaosConfig(duration_s=10.0, kill_every_s=2.0, min_kills=5)

    async def measured(config, log_dir, progress=False):
        return chaos_result(config, **changes)

    monkeypatch.setattr(chaos_bench, "measure", measured)
    args = argparse.Namespace(
        duration=config.duration_s,
        kill_every=config.kill_every_s,
        min_kills=config.min_kills,
        hang_share=config.hang_share,
        workers=config.workers,
        time_scale=config.time_scale,
        max_batch=config.max_batch,
        load=config.load,
        http_share=config.http_share,
        heartbeat_timeout=config.heartbeat_timeout_s,
        max_queue=config.max_queue,
        drain=config.drain_s,
        seed=config.seed,
        json=None,
    )
    if says is None:
        assert chaos_bench.run(args) == 0 and "FAILED" not in capsys.readouterr().err
    else:
        with pytest.raises(SystemExit) as failed:  # exit 1, its message said by argus (engine/cli.py)
            chaos_bench.run(args)
        assert failed.value.code.startswith("argus bench chaos: FAILED: ") and says in failed.value.code
