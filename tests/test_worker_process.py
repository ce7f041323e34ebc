"""A real `argus worker` process (tiny backend) driven over a real ROUTER socket, as the engine does."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from fake_engine import FakeEngine

from engine_process import ROOT, has_loaded_numpy, start_worker
from protocols.worker_messages import (
    PROTOCOL_VERSION,
    Abort,
    BatchDone,
    EngineHeartbeat,
    Generate,
    GenerateItem,
    Heartbeat,
    Hello,
    ItemCancelled,
    ItemDone,
    ItemFailed,
    LevelSet,
    Rejoin,
    SetLevel,
    Shutdown,
    Welcome,
)

STEPS = 16  # past the last level a run keeps (15), so a resume from it runs a step


@pytest.fixture(scope="module")
def worker():
    engine = FakeEngine()
    process = start_worker(engine.address, "tiny", "--worker-id", "w0", "--threads", "1")
    try:
        hello = engine.receive(Hello)
        # this fake engine sends no heartbeats of its own: let the worker wait long before giving up on it
        engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
        yield engine, hello, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        engine.close()


def generate(engine, batch_id, level=0, items=None):
    items = items or [GenerateItem(f"r{batch_id}", "a lighthouse on a cliff at dusk", 7)]
    engine.send(Generate(batch_id, level, STEPS, 64, 64, 5.0, "png", items))
    answer = engine.receive(BatchDone)
    assert answer.batch_id == batch_id
    assert all(isinstance(outcome, ItemDone) for outcome in answer.outcomes)
    return answer.outcomes


def test_hello_describes_the_worker(worker):
    _, hello, process = worker
    assert (hello.protocol, hello.worker_id, hello.backend, hello.device) == (PROTOCOL_VERSION, "w0", "tiny", "cpu")
    assert hello.pid == process.pid and not hello.simulated
    assert hello.levels == [5, 10, 15, 20, 25] and hello.default_size == 64


def test_full_run_then_resume_runs_exactly_the_remaining_steps(worker):
    engine, _, _ = worker
    (full,) = generate(engine, 1)
    assert full.steps_run == STEPS and full.level == 0
    assert sorted(full.by_level()) == [5, 10, 15]
    for level in (5, 10, 15):
        item = GenerateItem(f"k{level}", "a lighthouse on a cliff at night", 8, full.by_level()[level])
        (resumed,) = generate(engine, 10 + level, level=level, items=[item])
        assert resumed.steps_run == STEPS - level
        assert resumed.level == level
        assert sorted(resumed.by_level()) == [k for k in (5, 10, 15) if k > level]
        assert resumed.image[:4] == b"\x89PNG"


def test_same_inputs_same_image_over_the_wire(worker):
    engine, _, _ = worker
    (first,) = generate(engine, 30)
    (second,) = generate(engine, 31)
    assert bytes(first.image) == bytes(second.image)
    np.testing.assert_array_equal(first.by_level()[10], second.by_level()[10])
    other = generate(engine, 32, items=[GenerateItem("x", "a lighthouse on a cliff at dusk", 8)])[0]
    assert bytes(other.image) != bytes(first.image)


def test_set_level_is_acknowledged_without_reload(worker):
    engine, _, _ = worker
    engine.send(SetLevel(10))
    assert engine.receive(LevelSet).level == 10
    assert engine.receive(Heartbeat).level == 10


def test_garbage_from_the_engine_side_does_not_kill_the_worker(worker):
    engine, _, process = worker
    engine.socket.send_multipart([engine.identity, os.urandom(40)])
    engine.socket.send_multipart([engine.identity, b"\x81\xa4type\xa8generate"])
    (done,) = generate(engine, 40)
    assert done.steps_run == STEPS and process.poll() is None


def test_a_batch_whose_frames_do_not_decode_is_answered_failed(worker):
    """A latent frame of the wrong size: the worker dropped the batch unanswered, so the engine waited for its
    images until their deadline, or for ever."""
    engine, _, process = worker
    latent = np.zeros((4, 8, 8), np.float16)
    items = [GenerateItem("whole", "a cat", 1, latent), GenerateItem("short", "a dog", 2, latent)]
    frames = engine.codec.encode(Generate(45, 5, STEPS, 64, 64, 5.0, "png", items))
    frames[2] = bytes(frames[2])[:-2]
    engine.socket.send_multipart([engine.identity, *frames])
    answer = engine.receive(BatchDone, timeout_s=30)
    assert answer.batch_id == 45 and [o.request_id for o in answer.outcomes] == ["whole", "short"]
    assert all(isinstance(o, ItemFailed) and "frame size" in o.message for o in answer.outcomes)
    (done,) = generate(engine, 46)
    assert done.steps_run == STEPS and process.poll() is None


def test_abort_between_steps_cancels_a_running_batch(worker):
    engine, _, _ = worker
    item = GenerateItem("long", "a long one", 1)
    engine.send(Generate(50, 0, 200, 64, 64, 5.0, "png", [item]))
    while engine.receive(Heartbeat).running_batch != 50:
        pass  # wait until the batch is under way
    engine.send(Abort(["long"]))
    cancelled = engine.receive(BatchDone)
    assert (cancelled.batch_id, cancelled.outcomes) == (50, [ItemCancelled("long")])
    (done,) = generate(engine, 51)  # and the worker carries on
    assert done.steps_run == STEPS


def test_shutdown_sends_a_worker_started_by_hand_back_to_saying_hello(worker):
    """It outlives its engine: an engine restarted on the same address gets it back at once."""
    engine, hello, process = worker
    engine.send(Shutdown())
    again = engine.receive(Hello)
    assert (again.worker_id, again.session) == (hello.worker_id, hello.session + 1)
    engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
    (done,) = generate(engine, 60)
    assert done.steps_run == STEPS and process.poll() is None


def test_shutdown_ends_a_worker_an_engine_spawned():
    engine = FakeEngine()
    process = start_worker(engine.address, "sim", "--time-scale", "0", "--die-with-parent")
    try:
        engine.receive(Hello)
        engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
        engine.send(Shutdown())
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        engine.close()


def test_what_comes_before_welcome_is_ignored_with_one_line_for_each_wait(tmp_path):
    """An engine paused past its timeout sends what it queued for a worker saying hello again: each message was a
    warning of its own."""
    engine, log_path = FakeEngine(), tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        process = start_worker(engine.address, "sim", "--time-scale", "0", "--worker-id", "w-paused", stderr=log)
    try:
        for session in range(2):  # the first wait, then the one after a Rejoin
            while engine.receive(Hello).session != session:
                pass  # a hello of the wait before, said again
            for message in (EngineHeartbeat(), SetLevel(5), Abort(["r1"]), EngineHeartbeat()):
                engine.send(message)
            engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
            engine.send(SetLevel(10))
            # read in order: what came before it was read too (a hello said again meanwhile is answered by the Welcome)
            assert engine.receive(LevelSet, skipping=(Hello,)).level == 10
            engine.send(Rejoin())
        process.terminate()
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        engine.close()
    said = [line for line in log_path.read_text().splitlines() if "before welcome" in line]
    assert len(said) == 2 and all("ignoring EngineHeartbeat before welcome" in line for line in said), said


def started_loading(process) -> str:
    """The worker's stderr up to its loading line (the model loads after it, for seconds)."""
    seen = ""
    while "loading the tiny backend on cpu" not in seen:
        line = process.stderr.readline()
        assert line, seen
        seen += line
    return seen


def assert_ctrl_c_stops_it_saying(process: subprocess.Popen, last_line: str) -> None:
    """A worker started by hand, sent Ctrl-C: it ends with the shells' code for it and `last_line`, no traceback."""
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert err.strip().endswith(last_line)


def test_ctrl_c_while_the_model_loads_stops_a_worker_started_by_hand_without_a_traceback():
    """It died of a KeyboardInterrupt in torch's or diffusers' imports: a page of traceback."""
    engine = FakeEngine()
    process = start_worker(engine.address, "tiny", stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    try:
        started_loading(process)
        assert_ctrl_c_stops_it_saying(process, "stopped while loading the model")
    finally:
        if process.poll() is None:
            process.kill()
        engine.close()


def test_ctrl_c_as_a_worker_started_by_hand_imports_stops_it_without_a_traceback(tmp_path):
    """As `argus worker` (`python -m engine`), which holds the signal through its imports and then raised it again:
    a KeyboardInterrupt traceback from the command line's start."""
    command = [sys.executable, "-m", "engine", "worker", "--connect", f"ipc://{tmp_path}/nobody", "--backend", "sim"]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    try:
        deadline = time.monotonic() + 60
        while not has_loaded_numpy(process.pid):  # inside its imports: polled closely, they end in a few hundred ms
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        assert_ctrl_c_stops_it_saying(process, "stopped as it started")
    finally:
        if process.poll() is None:
            process.kill()


def test_ctrl_c_while_the_model_loads_leaves_a_worker_its_engine_launched_loading():
    """Ctrl-C in the engine's terminal reaches its workers too: one still loading died of it, with a traceback."""
    engine = FakeEngine()
    process = start_worker(
        engine.address, "tiny", "--die-with-parent", stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default
    )
    try:
        started_loading(process)
        process.send_signal(signal.SIGINT)
        assert engine.receive(Hello).pid == process.pid
        process.terminate()
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0 and "Traceback" not in err, err
        # transformers' notice that its image processors fall back to PIL, which argus does not use (workers/__init__)
        assert "requires torchvision" not in err, err
    finally:
        if process.poll() is None:
            process.kill()
        engine.close()


def _sigint_default() -> None:
    # a test run from a shell's background job inherits SIGINT ignored, as a worker started by hand does not
    signal.signal(signal.SIGINT, signal.SIG_DFL)
