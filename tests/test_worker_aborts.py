"""Aborts of images that wait in a worker's queue: they are answered cancelled and not run.

The worker runs in this process (tests/worker_in_process.py: a real DEALER, a sim backend at time scale 0) so that
the test can hold its first batch while it queues the next one and aborts some of its images.
"""

from worker_in_process import batch, taken_in, welcome, worker_runtime

from protocols.worker_messages import Abort, BatchDone, ItemCancelled, ItemDone


def test_images_aborted_while_queued_are_not_run():
    with worker_runtime() as served:
        engine, backend = served.engine, served.backend
        welcome(engine)
        engine.send(batch(1, "a0"))
        engine.send(batch(2, "b0", "b1", "b2", "b3"))
        engine.send(batch(3, "c0", "c1"))
        engine.send(Abort(["b1", "b2", "b3", "c0", "c1"]))
        # answered in order: once LevelSet is in, the worker has taken the Abort in, while batch 1 is still held
        taken_in(engine, level=5)
        backend.release.set()
        answers = {done.batch_id: done.outcomes for done in (engine.receive(BatchDone) for _ in range(3))}
    assert [type(o) for o in answers[2]] == [ItemDone, ItemCancelled, ItemCancelled, ItemCancelled]
    assert [o.request_id for o in answers[2]] == ["b0", "b1", "b2", "b3"]
    assert [type(o) for o in answers[3]] == [ItemCancelled, ItemCancelled]
    # batch 2 ran its one wanted image alone (a batch of 4 takes 2.5 times as long), batch 3 did not run
    assert backend.ran == [["a0"], ["b0"]]
