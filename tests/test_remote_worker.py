"""A worker started by hand with `argus worker --connect` joins an engine that spawned none."""

import subprocess
import sys

from engine.client import ArgusClient
from engine_process import ROOT, start_engine
from protocols.client_messages import Images


def test_hand_started_worker_serves(tmp_path):
    engine = start_engine(tmp_path, workers=0, backend="sim", wait=False)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "worker",
            "--connect",
            engine.worker_address,
            "--backend",
            "sim",
            "--time-scale",
            "0.01",
            "--worker-id",
            "by-hand",
        ],
        cwd=ROOT,
    )
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
