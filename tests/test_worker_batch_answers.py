"""What a worker in process tells its engine of itself and of a batch it cannot run: its hello names the step counts
its backend refuses (the engine refuses them at admission), and a batch its backend refuses is answered refused,
image by image, the batch's fault, not the worker's."""

import dataclasses

from worker_in_process import HeldFirstRun, welcome, worker_runtime

from protocols.worker_messages import REFUSED, BatchDone, Generate, GenerateItem, ItemFailed


class RefusingSteps(HeldFirstRun):
    def describe(self):
        return dataclasses.replace(super().describe(), refused_steps=(61, 103))


def test_the_hello_names_the_step_counts_the_backend_refuses():
    with worker_runtime(backend=RefusingSteps()) as served:
        assert welcome(served.engine).refused_steps == [61, 103]


def test_a_batch_the_backend_refuses_is_answered_refused_for_each_image():
    with worker_runtime() as served:
        engine, backend = served.engine, served.backend
        welcome(engine)
        backend.release.set()
        items = [GenerateItem(rid, "a harbour at dawn", 0) for rid in ("a0", "a1")]
        engine.send(Generate(1, 0, 50, 100, 64, 5.0, "png", items))  # 100: not a multiple of 8
        outcomes = engine.receive(BatchDone).outcomes
    assert [(type(o), o.request_id, o.code) for o in outcomes] == [
        (ItemFailed, "a0", REFUSED),
        (ItemFailed, "a1", REFUSED),
    ]
