"""SIGKILL of a worker holding requests: each is still answered exactly once, and the worker comes back."""

import os
import signal
import time
import uuid
from collections import Counter

import zmq
from waiting import wait_for

from engine_process import raw_client, start_engine
from protocols.client_messages import Generate, Images, client_side_codec

REQUESTS = 16


def test_killed_worker_loses_nothing_and_is_restarted(tmp_path):
    # sim workers: about 0.5 s per image, so the kill lands while they hold work
    engine = start_engine(tmp_path, "--time-scale", "0.1", "--max-batch", "2", backend="sim")
    context = zmq.Context()
    sock = raw_client(context, engine.client_address)
    codec = client_side_codec()
    try:
        before = {w["name"] for w in engine.ready()["workers"]}
        ids = [uuid.uuid4().hex for _ in range(REQUESTS)]
        for request_id in ids:
            sock.send_multipart(codec.encode(Generate(request_id, f"prompt {request_id}", width=64, height=64)))
        assert wait_for(lambda: any(w["load"] for w in engine.ready()["workers"]), timeout_s=60)
        victim = max(engine.ready()["workers"], key=lambda w: w["load"])
        assert victim["load"] > 0
        os.kill(victim["pid"], signal.SIGKILL)

        replies: Counter[str] = Counter()
        deadline = time.monotonic() + 60
        # read until every request is answered, then a while longer to catch duplicates
        while time.monotonic() < deadline and (len(replies) < REQUESTS or sock.poll(1500)):
            if sock.poll(500):
                reply = codec.decode(sock.recv_multipart())
                assert isinstance(reply, Images), reply
                replies[reply.request_id] += 1
        assert set(replies) == set(ids)
        assert set(replies.values()) == {1}

        status = engine.wait_ready(2, timeout_s=30)
        after = {w["name"] for w in status["workers"]}
        assert victim["name"] not in after and len(after - before) == 1
        assert engine.metric("argus_worker_losses_total", cause="exited") == 1
        assert engine.metric("argus_worker_restarts_total") == 1
        assert engine.metric("argus_redispatched_images_total") >= 1
        assert engine.metric("argus_workers", state="ready") == 2
    finally:
        sock.close()
        context.term()
        assert engine.stop() == 0
