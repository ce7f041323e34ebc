"""A worker's turns with its engine, in process: each hello after a lost engine is a new session at the level the
worker holds, a Shutdown sends a worker started by hand back to hello as one whose engine stopped, what a lost
engine sent is void, and a welcome it cannot keep ends the worker."""

import logging
import math

import pytest
from waiting import wait_for
from worker_in_process import batch, taken_in, welcome, worker_runtime

from protocols.worker_messages import (
    PROTOCOL_VERSION,
    Abort,
    BatchDone,
    EngineHeartbeat,
    Heartbeat,
    Hello,
    ItemCancelled,
    ItemDone,
    Rejoin,
    Shutdown,
    Welcome,
)
from workers import runtime
from workers.runtime import EngineRefused, untimely_welcome


def test_each_hello_after_a_rejoin_is_a_new_session_at_the_level_the_worker_holds():
    with worker_runtime() as served:
        engine = served.engine
        assert welcome(engine).session == 0
        taken_in(engine, level=10)  # moved by the engine's controller
        engine.send(Rejoin())
        again = welcome(engine, level=15)  # the next engine puts it elsewhere
        assert (again.session, again.level) == (1, 10)
        assert engine.receive(Heartbeat).level == 15
        engine.send(Rejoin())
        third = welcome(engine)
        assert (third.session, third.level) == (2, 15)


def test_what_comes_before_a_welcome_is_said_once_for_each_wait_and_a_rejoin_not_at_all(caplog):
    with caplog.at_level(logging.WARNING, logger="argus"), worker_runtime() as served:
        engine = served.engine
        engine.receive(Hello)
        engine.send(EngineHeartbeat())  # a paused engine's, queued for the worker it still counts
        engine.send(EngineHeartbeat())
        welcome(engine)
        taken_in(engine, skipping=(Hello,))  # the hellos said again at once after each
        engine.send(Rejoin())
        engine.receive(Hello)
        engine.send(Rejoin())  # the answer to a beat sent before that hello
        engine.send(EngineHeartbeat())
        welcome(engine)
        taken_in(engine, skipping=(Hello,))
    ignoring = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ignoring")]
    assert [line.split(" before")[0] for line in ignoring] == ["ignoring EngineHeartbeat"] * 2


def test_a_shutdown_sends_a_worker_started_by_hand_to_hello_as_one_whose_engine_stopped_until_welcomed():
    with worker_runtime() as served:
        engine, runtime = served.engine, served.runtime
        welcome(engine)
        taken_in(engine)
        engine.send(Shutdown())
        engine.receive(Hello)
        assert runtime.engine_stopped  # its warnings while it waits say so, and blame no key
        engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
        taken_in(engine)
        assert not runtime.engine_stopped


def test_a_worker_whose_engine_went_silent_after_serving_it_says_so_and_blames_no_key(caplog, monkeypatch):
    """Killed (SIGKILL, the OOM killer, a crash), the engine says nothing: the worker it served warned as one that
    never reached an engine, asking whether the engine took its CURVE keys, which it had taken until then (or which
    neither end used)."""
    monkeypatch.setattr(runtime, "UNANSWERED_WARNING_S", 0.2)
    with caplog.at_level(logging.WARNING, logger="argus"), worker_runtime() as served:
        engine = served.engine
        welcome(engine, engine_timeout_s=0.2)
        engine.receive(Hello, timeout_s=8)  # and its hellos go unanswered
        said = f"the engine at {engine.address} went silent (killed, crashed, or cut off from this host)"
        assert wait_for(lambda: said in caplog.text, timeout_s=10), caplog.text
    assert "no engine has answered this worker for" in caplog.text
    assert "CURVE" not in caplog.text and "no answer from an engine" not in caplog.text


def test_a_batch_running_when_the_engine_was_lost_is_cut_short_not_answered_and_its_aborts_forgotten():
    """The engine re-dispatches what it sent (a new one knows nothing of it): the run is worth nothing any more, and
    an abort the lost engine sent does not cancel the image when it comes again."""
    with worker_runtime() as served:
        engine, backend = served.engine, served.backend
        welcome(engine)
        engine.send(batch(1, "a0", "a1"))
        assert backend.started.wait(30)
        engine.send(Abort(["a1"]))
        engine.send(Rejoin())
        taken_in(engine)
        backend.release.set()
        welcome(engine)  # and no BatchDone before its hello
        assert backend.cut_short
        engine.send(batch(2, "a1"))
        assert [type(o) for o in engine.receive(BatchDone).outcomes] == [ItemDone]


def test_an_abort_is_forgotten_once_answered_and_one_for_no_image_here_is_not_kept():
    """Kept, the worker's set of aborts grew for its whole life, and an image sent under one of those ids was
    cancelled unrun."""
    with worker_runtime() as served:
        engine, backend = served.engine, served.backend
        welcome(engine)
        engine.send(batch(1, "a0"))
        # running: else the worker may take the abort in first, and answer the batch before the level
        assert backend.started.wait(30)
        engine.send(Abort(["a0", "z0"]))  # z0: answered already, or never sent here
        taken_in(engine)
        backend.release.set()
        assert [type(o) for o in engine.receive(BatchDone).outcomes] == [ItemCancelled]
        engine.send(batch(2, "a0", "z0"))
        assert [type(o) for o in engine.receive(BatchDone).outcomes] == [ItemDone, ItemDone]


def test_an_engine_heard_from_is_not_lost_while_its_beats_come():
    """Any message from the engine counts: its beats keep a worker with nothing to do welcomed."""
    with worker_runtime() as served:
        engine = served.engine
        welcome(engine, engine_timeout_s=2)
        for _ in range(40):  # for twice its timeout
            engine.send(EngineHeartbeat())
            if engine.socket.poll(100):
                _, *frames = engine.socket.recv_multipart()
                assert not isinstance(engine.codec.decode(frames), Hello)


def test_an_engine_not_heard_from_for_the_timeout_it_gave_is_lost():
    with worker_runtime() as served:
        engine = served.engine
        welcome(engine, engine_timeout_s=0.2)
        engine.receive(Hello, timeout_s=8)  # under the 10 s a worker goes by before any welcome


@pytest.mark.parametrize(
    ("beat_s", "timeout_s", "said"),
    [
        (0.0, 10.0, "heartbeat interval of 0.0 s"),
        (math.inf, 10.0, "heartbeat interval of inf s"),
        (1.0, -1.0, "timeout of -1.0 s"),
    ],
)
def test_a_welcome_whose_times_cannot_be_kept_is_refused(beat_s, timeout_s, said):
    refusal = untimely_welcome("tcp://h:5556", Welcome(PROTOCOL_VERSION, beat_s, timeout_s, 0))
    assert refusal == f"tcp://h:5556 welcomed it with a {said}, where an engine gives a positive number"
    assert untimely_welcome("tcp://h:5556", Welcome(PROTOCOL_VERSION, 0.5, 600, 0)) is None


def test_a_hello_answered_with_what_no_engine_sends_ends_the_worker_saying_so():
    with worker_runtime() as served:
        engine = served.engine
        engine.receive(Hello)
        engine.socket.send_multipart([engine.identity, b"\xff not msgpack"])
        served.thread.join(30)
        [refused] = served.failed
        assert isinstance(refused, EngineRefused) and "answered a hello with a message no argus engine sends" in str(
            refused
        )
