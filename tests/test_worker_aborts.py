"""Aborts of images that wait in a worker's queue: they are answered cancelled and not run.

The worker runs in this process (a real DEALER, a sim backend at time scale 0) so that the test can hold its first
batch while it queues the next one and aborts some of its images.
"""

import threading

import pytest
from fake_engine import FakeEngine

from protocols.worker_messages import (
    PROTOCOL_VERSION,
    Abort,
    BatchDone,
    Generate,
    GenerateItem,
    Hello,
    ItemCancelled,
    ItemDone,
    LevelSet,
    SetLevel,
    Welcome,
)
from workers.backend import Backend
from workers.config import WorkerConfig
from workers.main import load_backend
from workers.runtime import WorkerRuntime


class HeldFirstBatch(Backend):
    """A sim backend that records each batch it is given and holds the first until released, serving the socket."""

    def __init__(self):
        self._sim = load_backend(WorkerConfig("tcp://unused:1", "aborts", backend="sim", time_scale=0.0))
        self.release = threading.Event()
        self.ran: list[list[str]] = []

    def describe(self):
        return self._sim.describe()

    def run(self, batch, control):
        self.ran.append([item.request_id for item in batch.items])
        if len(self.ran) == 1:
            while not self.release.wait(0.01):
                control.between_steps()
        return self._sim.run(batch, control)


def batch(batch_id: int, *request_ids: str) -> Generate:
    items = [GenerateItem(rid, f"a harbour at dawn {rid}", i) for i, rid in enumerate(request_ids)]
    return Generate(batch_id, 0, 50, 1024, 1024, 5.0, "png", items)


@pytest.fixture
def worker():
    engine, backend = FakeEngine(), HeldFirstBatch()
    runtime = WorkerRuntime(backend, engine.address, "aborts")
    thread = threading.Thread(target=runtime.serve, daemon=True)
    thread.start()
    try:
        engine.receive(Hello)
        engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
        yield engine, backend
    finally:
        backend.release.set()
        runtime.stop()
        thread.join(30)
        engine.close()
    assert not thread.is_alive()


def test_images_aborted_while_queued_are_not_run(worker):
    engine, backend = worker
    engine.send(batch(1, "a0"))
    engine.send(batch(2, "b0", "b1", "b2", "b3"))
    engine.send(batch(3, "c0", "c1"))
    engine.send(Abort(["b1", "b2", "b3", "c0", "c1"]))
    # answered in order: once LevelSet is in, the worker has taken the Abort in, while batch 1 is still held
    engine.send(SetLevel(5))
    engine.receive(LevelSet)
    backend.release.set()
    answers = {done.batch_id: done.outcomes for done in (engine.receive(BatchDone) for _ in range(3))}
    assert [type(o) for o in answers[2]] == [ItemDone, ItemCancelled, ItemCancelled, ItemCancelled]
    assert [o.request_id for o in answers[2]] == ["b0", "b1", "b2", "b3"]
    assert [type(o) for o in answers[3]] == [ItemCancelled, ItemCancelled]
    # batch 2 ran its one wanted image alone (a batch of 4 takes 2.5 times as long), batch 3 did not run
    assert backend.ran == [["a0"], ["b0"]]
