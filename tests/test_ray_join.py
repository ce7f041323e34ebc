"""An engine joins a Ray head started by hand that listens on loopback alone, named by a loopback --ray-address (Ray
rewrote it to the host's own address, where nothing answered, and the engine said it timed out); a head that refuses
the engine's token ends the engine at once, in one line that says so and how to give the token (it said it timed
out, after a line from Ray for each try)."""

import importlib.util
import uuid

import pytest
from ray_head import loopback_ray_head

from engine_process import start_engine

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")

TOKEN = uuid.uuid4().hex


@pytest.fixture(scope="module")
def loopback_head(tmp_path_factory):
    """`ray start --head --node-ip-address=127.0.0.1` with token authentication; its address."""
    log_path = tmp_path_factory.mktemp("ray-head") / "head.log"
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
    with loopback_ray_head(log_path, "--num-cpus=1", environment=token) as address:
        yield address


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
