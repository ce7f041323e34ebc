"""A worker that `argus bench worker` (or `argus profile latency`) drives and that dies between two batches is said to
have exited, with its log: the bench ended in zmq's "Host unreachable", the ROUTER's refusal to send to it."""

import argparse

import pytest

from controller.profile_latency import WorkerProcess, add_worker_arguments
from protocols.worker_messages import GenerateItem


@pytest.mark.timeout(60)
def test_a_worker_that_died_between_batches_is_said_to_have_exited(tmp_path):
    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    args = parser.parse_args(["--backend", "sim", "--time-scale", "0"])
    with WorkerProcess(args, 1, tmp_path) as worker:
        worker.handshake()
        item = GenerateItem("a", "a red fox", 1, None)
        worker.generate(0, 50, 64, 5.0, [item])  # served: the ROUTER knows it
        worker.child.process.kill()
        worker.child.process.wait()
        with pytest.raises(RuntimeError, match="worker exited with -9"):
            worker.generate(0, 50, 64, 5.0, [item])
