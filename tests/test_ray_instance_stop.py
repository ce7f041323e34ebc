"""An engine's own Ray instance ends with it: stopped (SIGTERM) while that instance still started, or after its GCS
was killed, the engine left its raylet's agents (ray::DashboardAgent, ray::RuntimeEnvAgent) running for a minute or
more, orphaned, waiting on the GCS gone with it."""

import importlib.util
import os
import signal

import pytest
import waiting
from process_checks import left_in_session

from engine_process import start_engine
from loadgen.bench.proc import children_of, read_command

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")


def assert_nothing_left(engine) -> None:
    """Nothing of the engine's session is left once it has stopped; killed if it is, so the test leaves nothing
    either."""
    session = engine.process.pid
    try:
        # bounded for a loaded machine: the agents left ran on for a minute or more
        assert waiting.wait_for(lambda: not left_in_session(session), timeout_s=20), left_in_session(session)
    finally:
        for pid in left_in_session(session):
            os.kill(pid, signal.SIGKILL)


def agents_started(engine_pid: int) -> bool:
    """Whether the engine's raylet has started its agents (ray::DashboardAgent, ray::RuntimeEnvAgent), its first
    children."""
    raylets = [pid for pid in children_of(engine_pid) if "raylet/raylet" in read_command(pid)]
    return any(children_of(raylet) for raylet in raylets)


def test_a_stop_while_its_ray_instance_starts_leaves_nothing_of_it(tmp_path):
    engine = start_engine(tmp_path, "--launcher", "ray", workers=1, backend="sim", wait=False)
    try:
        # `ray.init` returns a second or two after the raylet has started its agents
        assert waiting.wait_for(lambda: agents_started(engine.process.pid), timeout_s=120), engine.log()
        assert engine.stop() == 0, engine.log()
    finally:
        engine.stop()
        assert_nothing_left(engine)


def test_a_stop_after_its_ray_instance_lost_its_gcs_leaves_nothing_of_it(tmp_path):
    engine = start_engine(tmp_path, "--launcher", "ray", workers=1, backend="sim")
    try:
        (gcs,) = (pid for pid in children_of(engine.process.pid) if "gcs_server" in read_command(pid))
        os.kill(gcs, signal.SIGKILL)
        assert engine.stop() == 0, engine.log()
    finally:
        engine.stop()
        assert_nothing_left(engine)
