"""An engine's own Ray instance ends with it: stopped (SIGTERM) while that instance still started, or after its GCS
was killed (test_ray_launcher's API key test, whose engine's GCS is killed), or ended when the instance did not start
within --ray-connect-timeout, the engine left its raylet's agents (ray::DashboardAgent, ray::RuntimeEnvAgent) running
for a minute or more, orphaned, waiting on the GCS gone with it. Its stop ends in time when the raylet has gone and
the GCS answers nothing."""

import concurrent.futures
import contextlib
import importlib.util
import os
import signal

import pytest
import waiting
from session_leftovers import assert_nothing_left

from engine.system.proc_reads import children_of, read_command
from engine_process import start_engine

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")


def own_processes(engine_pid: int, command: str) -> list[int]:
    """The engine's children running `command` (the processes of its Ray instance it started itself)."""
    return [pid for pid in children_of(engine_pid) if command in read_command(pid)]


def agents_started(engine_pid: int) -> bool:
    """Whether the engine's raylet has started its agents (ray::DashboardAgent, ray::RuntimeEnvAgent), its first
    children."""
    return any(children_of(raylet) for raylet in own_processes(engine_pid, "raylet/raylet"))


@contextlib.contextmanager
def own_ray_engine(tmp_path, *flags: str, wait: bool = True):
    """An engine of one sim worker on a Ray instance of its own, started with `flags` (and, with `wait`, ready);
    stopped at the end, and then nothing of its session may be left."""
    engine = start_engine(tmp_path, "--launcher", "ray", *flags, workers=1, backend="sim", wait=wait)
    try:
        yield engine
    finally:
        engine.stop()
        assert_nothing_left(engine)


def test_a_stop_while_its_ray_instance_starts_leaves_nothing_of_it(tmp_path):
    with own_ray_engine(tmp_path, wait=False) as engine:
        # `ray.init` returns a second or two after the raylet has started its agents
        assert waiting.wait_for(lambda: agents_started(engine.process.pid), timeout_s=120), engine.log()
        assert engine.stop() == 0, engine.log()


def test_an_exit_when_its_ray_instance_did_not_start_in_time_leaves_nothing_of_it(tmp_path):
    # long enough for the raylet to start its agents (2 to 3 s from the engine's start on a machine with other tests
    # running), which the exit must leave nothing of
    with own_ray_engine(tmp_path, "--ray-connect-timeout", "12", wait=False) as engine:
        # the instance's start held where it was once the raylet has started its agents: `ray.init` waits on it
        assert waiting.wait_for(lambda: agents_started(engine.process.pid), timeout_s=120), engine.log()
        for raylet in own_processes(engine.process.pid, "raylet/raylet"):
            os.kill(raylet, signal.SIGSTOP)
        assert engine.process.wait(120) == 2, engine.log()
        assert "(--ray-connect-timeout)" in engine.log(), engine.log()


@pytest.fixture(scope="module", autouse=True)
def stopped_after_its_raylet_ended(tmp_path_factory):
    """The test of the stop after the raylet ended waits out the stop's bounds, 5 s each (the actors' ends, their
    kill, the disconnect): its engine is started, its raylet ended and its GCS held, and the engine stopped, in a thread
    from the module's start, so those waits run while the other tests do. The engine, and its stop's exit code."""

    def stopped():
        with own_ray_engine(tmp_path_factory.mktemp("raylet-ended")) as engine:
            (gcs,) = own_processes(engine.process.pid, "gcs_server")
            (raylet,) = own_processes(engine.process.pid, "raylet/raylet")
            os.kill(gcs, signal.SIGSTOP)  # alive, its port open, answering nothing
            os.kill(raylet, signal.SIGTERM)
            exit_code = engine.stop()
        return engine, exit_code

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield pool.submit(stopped)


def test_a_stop_after_its_raylet_ended_while_its_gcs_answers_nothing_ends_in_time(stopped_after_its_raylet_ended):
    engine, exit_code = stopped_after_its_raylet_ended.result()  # and nothing of its session left (own_ray_engine's)
    # the stop waited in ray.shutdown until Ray ended the engine, 60 s on, with exit 1
    assert exit_code == 0, engine.log()
    assert "disconnecting from Ray took over" in engine.log(), engine.log()
