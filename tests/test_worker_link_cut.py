"""A worker link cut with a batch on the wire: the batch is lost, the worker dials again and beats on; its images
are sent again rather than owed for ever."""

import time

import pytest
from pictures import image_as_asked
from tcp_proxy import DroppingProxy
from test_chaos import FakeWorker, ask_in_background
from waiting import wait_for

from engine_process import start_engine, start_worker
from protocols.client_messages import Images
from protocols.worker_messages import BatchDone, Heartbeat, ItemDone

# the tests marked own_engine find theirs started while the tests before them ran (tests/engines_ahead.py)
pytestmark = pytest.mark.usefixtures("engines_ahead")


@pytest.mark.timeout(120)
def test_a_batch_lost_to_an_idle_worker_is_sent_again(tmp_path):
    engine = start_engine(tmp_path, "--heartbeat-timeout", "2", workers=0, backend="sim")  # listening: proxy it
    proxy = DroppingProxy(int(engine.worker_address.rsplit(":", 1)[1]))
    worker = start_worker(proxy.address, "sim", "--time-scale", "0.01", "--worker-id", "behind-a-proxy")
    replies = []
    try:
        engine.wait_ready(1)
        proxy.flowing.clear()  # the link stalls: the batch the engine sends next does not reach the worker
        asker = ask_in_background(engine.client_address, replies, "a lost batch", timeout_s=60)
        assert wait_for(lambda: engine.metric("argus_running_images") == 1)
        proxy.drop_all()  # and is cut, the batch on it; the worker dials again at once, idle
        proxy.flowing.set()
        asker.join(90)
    finally:
        worker.terminate()
        worker.wait(30)
        proxy.close()
        assert engine.stop() == 0
    (reply,) = replies
    assert isinstance(reply, Images), f"the request was never answered: {reply!r}"


@pytest.mark.timeout(120)
@pytest.mark.own_engine("--time-scale", "0.1", workers=0, backend="sim")
def test_the_batches_sent_before_the_one_a_worker_runs_are_sent_again(own_engine):
    # an image takes 0.5 s by the latency profile: past that, a second batch goes beside the first
    engine = own_engine
    worker = FakeWorker(engine.worker_address)
    replies = []
    try:
        worker.handshake(timeout_s=30)
        askers = [ask_in_background(engine.client_address, replies, "a lost batch", timeout_s=60)]
        lost = worker.next_batch(timeout_s=30)  # as if cut from the link: never run
        time.sleep(1.0)
        askers.append(ask_in_background(engine.client_address, replies, "a lost batch", timeout_s=60))
        second = worker.next_batch(timeout_s=30)
        assert lost is not None and second is not None and second.items[0].request_id != lost.items[0].request_id
        worker.send(Heartbeat(0, second.batch_id))  # running the second: the first never came
        worker.send(BatchDone(second.batch_id, answered(second)))
        again = worker.next_batch(timeout_s=30)
        assert again is not None and [item.request_id for item in again.items] == [lost.items[0].request_id]
        worker.send(BatchDone(again.batch_id, answered(again)))
        for asker in askers:
            asker.join(60)
    finally:
        worker.close()
        assert engine.stop() == 0
    assert len(replies) == 2 and all(isinstance(reply, Images) for reply in replies), replies


def answered(batch) -> list[ItemDone]:
    return [ItemDone(item.request_id, image_as_asked(batch), 0, [], None, 1.0, 50) for item in batch.items]
