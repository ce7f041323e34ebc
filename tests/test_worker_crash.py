"""A worker started by hand whose process dies (SIGKILL, a crash): its connection closes at once, and the engine's
beats to it bounce. It is lost then, and what it held goes to another worker, rather than waiting out the heartbeat
timeout, which no launcher of the engine's shortens for a worker it did not start."""

import os
import signal

import pytest
from test_chaos import ask_in_background
from waiting import wait_for

from engine_process import start_engine, start_worker
from protocols.client_messages import Images

# far past the bound the test waits for its answer: only the bounced beats can lose the worker in time
HEARTBEAT_TIMEOUT_S = "300"


@pytest.mark.timeout(180)
def test_the_images_a_crashed_worker_held_are_made_by_another_long_before_its_heartbeat_timeout(tmp_path):
    # --serve-late: the image waits on the slow worker past its deadline rather than being answered 504
    flags = ("--heartbeat-timeout", HEARTBEAT_TIMEOUT_S, "--serve-late")
    engine = start_engine(tmp_path, *flags, workers=0, backend="sim")
    doomed = start_worker(engine.worker_address, "sim", "--time-scale", "1000", "--worker-id", "doomed")
    spare = None
    replies = []
    try:
        engine.wait_ready(1)
        asker = ask_in_background(engine.client_address, replies, "a crashed worker's image", timeout_s=120)
        assert wait_for(lambda: engine.metric("argus_running_images") == 1)  # on the slow worker, for minutes
        spare = start_worker(engine.worker_address, "sim", "--time-scale", "0.01", "--worker-id", "spare")
        engine.wait_ready(2)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(30)
        asker.join(60)
        assert replies and isinstance(replies[0], Images), f"the image waited for the heartbeat timeout: {replies}"
        assert replies[0].images[0].worker.startswith("spare/")
        assert engine.metric("argus_worker_losses_total", cause="unreachable") == 1
    finally:
        for worker in (doomed, spare):
            if worker is not None and worker.poll() is None:
                worker.kill()
                worker.wait(30)
        assert engine.stop() == 0
