"""A hand-started worker outlives its engine: when a new engine comes up on the same address, it rejoins."""

import signal

import pytest

from engine.client import ArgusClient
from engine_process import free_port, start_engine, start_worker
from protocols.client_messages import Images


@pytest.mark.parametrize(
    ("stop", "told"),
    [
        # drained, the engine says Shutdown; welcomed by the engine going away, the worker waited out a heartbeat
        # timeout (10 s) before it tried the next engine on the address
        ("SIGTERM", "engine stopping; saying hello again"),
        # killed, the engine says nothing more: its workers served no one until their engine timeout (10 s by
        # default) ran out; now the new engine answers the first heartbeat it does not know with Rejoin
        ("SIGKILL", "the engine does not know this worker"),
    ],
)
def test_a_worker_serves_the_next_engine_when_told_not_when_the_last_one_falls_silent(tmp_path, stop, told):
    worker_port = free_port()
    # a local worker of its own to stop: the engine goes on reading its worker socket meanwhile
    first = start_engine(tmp_path, workers=1, backend="sim", worker_port=worker_port, wait=False)
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = start_worker(first.worker_address, "sim", "--time-scale", "0.01", stderr=log)
    second = None
    try:
        first.wait_ready(2, timeout_s=60)
        if stop == "SIGTERM":
            assert first.stop() == 0
        else:
            first.process.send_signal(signal.SIGKILL)
            first.process.wait()
        second = start_engine(tmp_path, workers=0, backend="sim", worker_port=worker_port, wait=False)
        (rejoined,) = second.wait_ready(1, timeout_s=60)["workers"]
        assert rejoined["pid"] == worker.pid
        with ArgusClient(second.client_address, timeout_s=30) as client:
            assert isinstance(client.generate("after the restart", width=64, height=64), Images)
        said = log_path.read_text()
        assert told in said
        assert "engine silent" not in said
    finally:
        if second is not None:
            assert second.stop() == 0
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
