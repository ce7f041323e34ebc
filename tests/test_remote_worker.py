"""A worker started by hand with `argus worker --connect` joins an engine that spawned none, and stops on Ctrl-C."""

import signal
import subprocess
import time

import pytest

from engine.client import ArgusClient
from engine_process import free_port, start_engine, start_worker
from protocols.client_messages import Images


def test_hand_started_worker_serves(tmp_path):
    engine = start_engine(tmp_path, workers=0, backend="sim", wait=False)
    worker = start_worker(engine.worker_address, "sim", "--time-scale", "0.01", "--worker-id", "by-hand")
    try:
        status = engine.wait_ready(1, timeout_s=60)
        (described,) = status["workers"]
        assert described["name"].startswith("by-hand/") and described["pid"] == worker.pid
        assert described["simulated"] is True
        with ArgusClient(engine.client_address, timeout_s=30) as client:
            reply = client.generate("a bridge in fog", width=64, height=64)
        assert isinstance(reply, Images) and reply.images[0].worker == described["name"]
    finally:
        assert engine.stop() == 0
        # the engine's drain told the worker to shut down
        assert worker.wait(timeout=30) == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_hand_started_worker_stops_cleanly_while_no_engine_answers(tmp_path, signum):
    # an engine address nothing listens on: the worker keeps saying hello
    worker = start_worker(f"tcp://127.0.0.1:{free_port()}", "sim", stderr=subprocess.PIPE)
    time.sleep(3)  # past its start and first hellos
    worker.send_signal(signum)
    assert worker.wait(timeout=30) == 0
    assert b"Traceback" not in worker.stderr.read()
