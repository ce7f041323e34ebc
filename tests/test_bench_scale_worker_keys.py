"""`argus bench scale` from a shell where ARGUS_WORKER_CURVE is set (to start a worker by hand): its fleets join its
engine, which has no CURVE."""

import pytest

from loadgen.bench import scale_bench
from protocols.curve import LOCAL_WORKER_KEYS_ENV, ClientKeys, KeyPair


@pytest.mark.timeout(120)
def test_the_fleets_leave_the_worker_keys_of_the_shell_alone(tmp_path, monkeypatch):
    # each fleet tried CURVE with them, heard that its engine has none, and exited 2: the benchmark failed
    monkeypatch.setenv(LOCAL_WORKER_KEYS_ENV, ClientKeys(KeyPair.generate(), KeyPair.generate().public).to_env())
    engine = scale_bench._start_engine(tmp_path)
    fleet = scale_bench._start_fleet(tmp_path, engine.worker_address, 2, 0)
    try:
        scale_bench._wait_workers(engine, [fleet], 2, timeout_s=60)
    finally:
        fleet.stop()
        engine.stop()
