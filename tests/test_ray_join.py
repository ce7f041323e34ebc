"""An engine joins a Ray head started by hand that listens on loopback alone, named by a loopback --ray-address (Ray
rewrote it to the host's own address, where nothing answered, and the engine said it timed out); a head that refuses
the engine's token ends the engine at once, in one line that says so and how to give the token (it said it timed
out, after a line from Ray for each try)."""

import importlib.util
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from engine_process import free_port, start_engine

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")

TOKEN = uuid.uuid4().hex


@pytest.fixture(scope="module")
def loopback_head(tmp_path_factory):
    """`ray start --head --node-ip-address=127.0.0.1` with token authentication; its address."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("ray-head") / "head.log"
    environment = os.environ | {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": TOKEN,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    ray = str(Path(sys.executable).with_name("ray"))
    command = [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}"]
    # workers' ports from the OS: Ray's range (10002 to 19999) may hold the port drawn for the head
    command += ["--include-dashboard=false", "--num-cpus=1", "--min-worker-port=0", "--max-worker-port=0"]
    with open(log_path, "wb") as log:
        head = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text(errors="replace"):
            assert head.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        # its processes die with it (Ray starts them with PR_SET_PDEATHSIG)
        head.terminate()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


def test_a_loopback_address_joins_a_head_that_listens_on_loopback_alone(tmp_path, monkeypatch, loopback_head):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    options = ("--launcher", "ray", "--ray-address", loopback_head, "--ray-connect-timeout", "30")
    engine = start_engine(tmp_path, *options, workers=1, backend="sim", wait=False)
    try:
        (worker,) = engine.wait_ready(1)["workers"]
        assert worker["name"].startswith("ray-0/")
        assert f"Connecting to existing Ray cluster at address: {loopback_head}..." in engine.log()
        assert engine.stop() == 0, engine.log()
    finally:
        engine.stop()


@pytest.mark.parametrize(
    "mode, token, cure",
    [
        ("token", uuid.uuid4().hex, "is not the cluster's"),
        (None, None, "the engine sent no token (RAY_AUTH_MODE is not 'token'): start it with RAY_AUTH_MODE=token"),
    ],
    ids=["another token", "no token"],
)
def test_a_head_that_refuses_the_token_ends_the_engine_at_once_saying_so(
    tmp_path, monkeypatch, loopback_head, mode, token, cure
):
    for name, value in (("RAY_AUTH_MODE", mode), ("RAY_AUTH_TOKEN", token)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    # Ray gives up after about 20 s of tries, within this timeout: it is not what ends the engine
    options = ("--launcher", "ray", "--ray-address", loopback_head, "--ray-connect-timeout", "60")
    engine = start_engine(tmp_path, *options, workers=1, backend="sim", wait=False)
    try:
        assert engine.process.wait(120) == 2, engine.log()
        log = engine.log()
        said = f"argus serve: error: could not connect to the Ray cluster at {loopback_head}: the cluster refused the"
        assert f"{said} engine's Ray token (RPC error: InvalidAuthToken: " in log
        assert cure in log
        # Ray's line for the try that was refused, not one for each try of its 20 s
        assert log.count("Failed to get cluster ID from GCS server") <= 2, log
        assert "Traceback" not in log
    finally:
        engine.stop()
