"""A request that fails on its own account (out of memory at its size, a prompt that breaks a backend) is answered
500 `worker_error`, which OpenAI's SDK (and many HTTP clients) sends twice more by default. Its three failures, each
a batch of a healthy worker, took that worker out of rotation as one failing 3 batches in a row (a local worker was
restarted: minutes of loading for SD-XL). Now a failed batch counts only when it failed something not already counted
since the worker's last image: a retry of the same body counts once, 3 different requests failing still take it out."""

import subprocess
import sys
from pathlib import Path

import openai
import pytest
from dispatcher_harness import Harness
from openai import OpenAI

from engine.dispatch import failing_workers
from engine.dispatch.failing_workers import FAILING_AFTER, REMEMBERED_ASKS
from engine.fleet.registry import WorkerHandle
from engine_process import start_engine
from protocols.worker_messages import BatchDone, ItemFailed
from protocols.worker_messages import Generate as Batch

FAILING_WORKER = Path(__file__).parent / "failing_worker.py"


def answer_new_batches(h: Harness, answered: set) -> None:
    """Answers each batch sent since the last call, as every worker does: the images whose prompt says "poison"
    failed, the others made."""
    for name, batch in [(name, message) for name, message in h.sent if isinstance(message, Batch)]:
        if batch.batch_id in answered:
            continue
        answered.add(batch.batch_id)
        worker = h.registry.get(name.encode())
        if any("poison" in item.prompt for item in batch.items):
            failed = [ItemFailed(item.request_id, "cuda_error", "CUDA out of memory") for item in batch.items]
            h.dispatcher.batch_done(worker, BatchDone(batch.batch_id, failed))
        else:
            h.finish(worker, batch)


def fleet() -> tuple[Harness, dict]:
    h = Harness()
    h.dispatcher.restart = lambda worker: False  # started by hand
    return h, {name: h.add_worker(name, max_batch=1) for name in "ab"}


async def test_a_request_sent_again_and_again_takes_no_worker_out():
    """The same body, under a new request id each time, failed on both workers (3 times each at least): before, the
    worker that failed it 3 times in a row was taken out."""
    h, workers = fleet()
    answered = set()
    for _ in range(FAILING_AFTER * len(workers) * 2):
        h.request(prompt="a poison apple")
        answer_new_batches(h, answered)
    assert all(worker.ready for worker in workers.values())
    assert {name for name, _ in h.sent} == set(workers)  # each failed it, and is judged on its own


async def test_different_requests_failing_in_a_row_still_take_a_worker_out():
    h, workers = fleet()
    answered = set()
    for number in range(FAILING_AFTER * len(workers)):
        h.request(prompt=f"a poison apple, {number}")
        answer_new_batches(h, answered)
    assert len(h.registry.taken_out()) == 1


def test_a_retry_counts_again_once_the_worker_made_an_image_and_on_another_worker():
    a, b = WorkerHandle(b"a/1", None, 0, 0.0), WorkerHandle(b"b/1", None, 0, 0.0)
    assert not failing_workers.judge(a, made=False, failed=["x"])
    assert not failing_workers.judge(b, made=False, failed=["x"])  # counted on a: on b too
    assert a.failed_batches == b.failed_batches == 1
    failing_workers.judge(a, made=False, failed=["x", "x"])  # a retry of what a failed: not counted
    assert a.failed_batches == 1
    failing_workers.judge(a, made=True, failed=[])
    failing_workers.judge(a, made=False, failed=["x"])  # since its last image, x is new again
    assert a.failed_batches == 1
    failing_workers.judge(a, made=False, failed=["x", "y"])  # a batch that failed something new counts
    assert a.failed_batches == 2
    for number in range(REMEMBERED_ASKS * 2):
        failing_workers.judge(a, made=False, failed=[number])
    assert len(a.failed_asks) == REMEMBERED_ASKS  # the oldest forgotten


@pytest.mark.timeout(120)
def test_openai_clients_retries_of_a_request_that_fails_on_its_own_account_take_no_worker_out(tmp_path, monkeypatch):
    """Two workers started by hand that fail only prompts saying "poison"; the SDK sends each of 3 such requests 3
    times: before, the worker that failed one 3 times in a row was out of rotation for 10 s."""
    # the SDK's pauses before its retries (0.5 then 1 s, each request): what it sends counts here, not when
    monkeypatch.setattr(OpenAI, "_calculate_retry_timeout", lambda *_: 0.01)
    engine = start_engine(tmp_path, workers=0, backend="sim")
    command = [sys.executable, str(FAILING_WORKER), "--connect", engine.worker_address, "--answer", "poison"]
    workers = [subprocess.Popen([*command, "--worker-id", name]) for name in ("gpu-a", "gpu-b")]
    try:
        engine.wait_ready(2, timeout_s=60)
        client = OpenAI(base_url=engine.http + "/v1", api_key="unused", timeout=60, max_retries=2)
        for _ in range(3):
            with pytest.raises(openai.InternalServerError) as raised:
                client.images.generate(prompt="a poison apple", size="64x64")
            assert raised.value.body["code"] == "worker_error"
        assert engine.metric("argus_requests_total", outcome="error", code="worker_error") == 9  # each sent 3 times
        assert {w["state"] for w in engine.ready()["workers"]} == {"ready"}, engine.log()
        assert "in a row" not in engine.log()
        assert client.images.generate(prompt="an apple", size="64x64").data
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
        assert engine.stop() == 0
