"""A hand-started worker outlives its engine: when a new engine comes up on the same address, it rejoins. Waiting for
it after an orderly stop, it says the engine stopped (not that its CURVE keys may be wrong), less and less often."""

import signal
import time

import pytest
from waiting import wait_for

from engine.client import ArgusClient
from engine_process import free_port, start_engine, start_lone_and_fleet, start_worker
from protocols.client_messages import Images
from workers.runtime import UNANSWERED_WARNING_MAX_S, UnansweredWarnings


@pytest.fixture(scope="module", autouse=True)
def left_waiting(tmp_path_factory):
    """A lone worker and a fleet of 2, each welcomed by an engine that is then stopped, as (worker port, tmp path,
    workers, logs, whether each said it was ready before the stop, the stop's exit status): each warns that the
    engine stopped only after 10 s unanswered (UNANSWERED_WARNING_S). Started with the module (autouse), not by its
    test, so that the 10 s pass while the tests before it run."""
    tmp_path = tmp_path_factory.mktemp("left-waiting")
    worker_port = free_port()
    engine = start_engine(tmp_path, workers=0, backend="sim", worker_port=worker_port, wait=False)
    workers, logs = start_lone_and_fleet(tmp_path, engine.worker_address, fleet=2)
    try:
        engine.wait_ready(3, timeout_s=60)
        ready = {"lone": "ready (sim on no device", "fleet": "fleet of 2 SIMULATED workers ready"}
        # the engine lists a worker at its hello, before the worker reads its Welcome: "ready again" follows a "ready"
        said_ready = {
            name: wait_for(lambda path=path, name=name: ready[name] in path.read_text(), timeout_s=30)
            for name, path in logs.items()
        }
        yield worker_port, tmp_path, engine, workers, logs, said_ready, engine.stop()
    finally:
        engine.stop()
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        assert [worker.wait(timeout=30) for worker in workers] == [0, 0]


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


def test_a_fleet_whose_engine_was_killed_and_replaced_says_so_once_and_ready_again_once(tmp_path):
    """The new engine answers each worker's beat with Rejoin, at the worker's own phase, and each is welcomed again at
    once: the fleet, whole again after each, said the loss and that it was ready again for each worker in turn (15
    pairs of lines for a fleet of 20)."""
    worker_port = free_port()
    first = start_engine(tmp_path, workers=0, backend="sim", worker_port=worker_port, wait=False)
    log_path = tmp_path / "fleet.log"
    with open(log_path, "wb") as log:
        fleet = start_worker(first.worker_address, "sim", "--count", "20", "--time-scale", "0.01", stderr=log)
    second = None
    try:
        first.wait_ready(20, timeout_s=60)
        assert wait_for(lambda: "fleet of 20 SIMULATED workers ready" in log_path.read_text(), timeout_s=30)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        second = start_engine(tmp_path, workers=0, backend="sim", worker_port=worker_port, wait=False)
        second.wait_ready(20, timeout_s=60)
        back = "fleet of 20 SIMULATED workers ready again"
        assert wait_for(lambda: back in log_path.read_text(), timeout_s=30), log_path.read_text()
        # the later workers' Rejoins, had they come one by one: all 20 have said hello to it (wait_ready lists a
        # worker at its hello), each welcomed within milliseconds after, and would have had its lines said by then
        time.sleep(1)
        said = log_path.read_text()
        assert said.count("the engine does not know this worker") == 1, said
        assert said.count("ready again") == 1, said
    finally:
        first.stop()
        if second is not None:
            second.stop()
        fleet.send_signal(signal.SIGTERM)
        assert fleet.wait(timeout=30) == 0


def test_a_wait_for_an_engine_is_warned_of_as_it_doubles_then_every_ten_minutes():
    warnings = UnansweredWarnings()
    warned = [waited for waited in range(3000) if warnings.due(waited)]
    assert UNANSWERED_WARNING_MAX_S == 600
    assert warned == [10, 20, 40, 80, 160, 320, 640, 1240, 1840, 2440]


def test_workers_waiting_after_their_engine_stopped_say_so_without_blaming_keys_and_say_when_back(left_waiting):
    """They warned every 10 s, for ever, of no answer, asking about CURVE keys that neither end used, though the
    engine had said it was stopping. A fleet says the engine stopped once, not once per worker (a thousand lines
    at every restart of the engine). Welcomed by the next engine, each says it is ready again: that warning was
    their last line while they served it."""
    worker_port, tmp_path, engine, _, logs, said_ready, stopped = left_waiting
    assert said_ready == {"lone": True, "fleet": True}, {name: path.read_text() for name, path in logs.items()}
    assert stopped == 0
    second = None
    try:
        said = f"the engine at {engine.worker_address} stopped"
        for path in logs.values():
            assert wait_for(lambda path=path: said in path.read_text(), timeout_s=60), path.read_text()
        waiting = "since: waiting for the next one on that address"
        assert f"no engine has answered this worker {waiting}" in logs["lone"].read_text()
        assert f"no engine has answered 2 of this fleet's 2 workers {waiting}" in logs["fleet"].read_text()
        assert logs["fleet"].read_text().count("engine stopping; saying hello again") == 1, logs["fleet"].read_text()
        for path in logs.values():
            assert "no answer from an engine" not in path.read_text()
            assert "CURVE" not in path.read_text()
            assert "ready again" not in path.read_text()
        second = start_engine(tmp_path, workers=0, backend="sim", worker_port=worker_port, wait=False)
        second.wait_ready(3, timeout_s=60)
        back = {"lone": "ready again (sim on no device", "fleet": "fleet of 2 SIMULATED workers ready again"}
        for name, path in logs.items():
            assert wait_for(lambda path=path, name=name: back[name] in path.read_text(), timeout_s=30), path.read_text()
            assert path.read_text().count("ready again") == 1, path.read_text()
    finally:
        if second is not None:
            second.stop()
