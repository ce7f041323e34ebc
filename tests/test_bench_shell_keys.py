"""A benchmark run from a shell where ARGUS_API_KEY or ARGUS_WORKER_CURVE is set (for an engine, or a worker started
by hand): its own engine and fleets take neither, and serve each other as without them."""

import pytest

from engine.config import API_KEY_ENV
from loadgen.bench import scale_bench
from protocols.curve import LOCAL_WORKER_KEYS_ENV, ClientKeys, KeyPair


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "variable, value",
    [
        # each fleet tried CURVE with them, heard that its engine has none, and exited 2
        (LOCAL_WORKER_KEYS_ENV, ClientKeys(KeyPair.generate(), KeyPair.generate().public).to_env()),
        # the engine required it, and the benchmark's /ready, sent without it, ended in KeyError: 'workers'
        (API_KEY_ENV, "s3cret"),
    ],
)
def test_a_benchmark_leaves_the_keys_of_its_shell_alone(tmp_path, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    engine = scale_bench._start_engine(tmp_path)
    fleet = scale_bench._start_fleet(tmp_path, engine.worker_address, 2, 0)
    try:
        scale_bench._wait_workers(engine, [fleet], 2, timeout_s=60)
    finally:
        fleet.stop()
        engine.stop()
