"""`argus bench checkpoint` fails at once when its engine dies, naming its exit: its probes waited 2 minutes for the
replies of a dead engine, then failed with a bare TimeoutError."""

import argparse

import pytest

from loadgen.bench import checkpoint_bench


@pytest.mark.timeout(60)
def test_an_engine_that_dies_during_the_probes_fails_the_run_naming_its_exit(monkeypatch):
    real_wait = checkpoint_bench._wait_restored

    def restored_then_killed(engine, *rest):
        real_wait(engine, *rest)
        engine.child.process.kill()

    monkeypatch.setattr(checkpoint_bench, "_wait_restored", restored_then_killed)
    args = argparse.Namespace(cache_mib=8, interval=1.0, duration=5.0, rate=10.0, json=None)
    with pytest.raises(RuntimeError, match=r"engine-\d+ exited with -9"):
        checkpoint_bench.run(args)
