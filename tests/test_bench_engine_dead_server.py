"""`argus bench engine` fails at once when its engine dies during a measurement, naming its exit: its clients waited
30 s for replies, then said only that the engine stopped answering."""

import argparse
import os
import signal

import pytest

from loadgen.bench import engine_bench


@pytest.mark.timeout(90)
def test_an_engine_that_dies_as_a_door_is_measured_fails_the_run_naming_its_exit(monkeypatch):
    real_workers_of = engine_bench.local_workers_of

    def workers_of_an_engine_then_killed(engine_pid):
        workers = real_workers_of(engine_pid)
        os.kill(engine_pid, signal.SIGKILL)  # the bench's own child, started by this test's run
        return workers

    monkeypatch.setattr(engine_bench, "local_workers_of", workers_of_an_engine_then_killed)
    args = argparse.Namespace(
        doors="zmq",
        workers=1,
        rounds=1,
        duration_s=1.0,
        latency_s=1.0,
        warmup_s=0.0,
        concurrency=4,
        http_concurrency=None,  # left out, as the ZeroMQ door alone is measured
        size=64,
        json=None,
    )
    with pytest.raises(RuntimeError, match=r"engine-\d+ exited with -9"):
        engine_bench.run(args)
