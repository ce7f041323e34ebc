"""How soon a refused request is told to try again: HTTP's Retry-After and a ZeroMQ Busy's retry_after_ms say the same
honest estimate (engine/queue_pace.py), where both said 1 s whatever the engine's state. A real engine with one
SIMULATED worker, a queue of one image held by a long run: the longer nothing leaves the queue, the longer the wait
it says (no time is asserted: the hint is read until it says more than a second)."""

import json
import socket

import openai
import pytest
from openai import OpenAI
from waiting import wait_for

from engine.client import ArgusClient
from engine_process import start_engine
from protocols.client_messages import Busy
from protocols.limits import MAX_RETRY_AFTER_S


@pytest.fixture
def engine(tmp_path):
    # 200 steps at --time-scale 2: a run of about 37 s, which holds the queue's one place
    engine = start_engine(tmp_path, "--time-scale", "2", "--max-queue", "1", backend="sim", workers=1)
    yield engine
    assert engine.stop() == 0


def hold_the_queue(engine) -> socket.socket:
    """A long request, sent over a connection of its own: closed, the engine cancels it."""
    held = socket.create_connection(engine.http.removeprefix("http://").split(":"))
    body = json.dumps({"prompt": "a long one", "size": "64x64", "num_inference_steps": 200}).encode()
    held.sendall(
        b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert wait_for(lambda: engine.metric("argus_queued_images") == 1)
    return held


@pytest.mark.timeout(120)
def test_both_doors_say_a_longer_wait_while_nothing_leaves_the_queue(engine):
    held = hold_the_queue(engine)
    try:
        with ArgusClient(engine.client_address, timeout_s=30) as client:
            hints: list[int] = []

            def said_longer() -> bool:
                reply = client.generate("a fox", width=64, height=64)
                assert isinstance(reply, Busy), reply
                hints.append(reply.retry_after_ms)
                return reply.retry_after_ms >= 2000

            assert wait_for(said_longer, timeout_s=60), hints
            assert all(ms % 1000 == 0 and 1000 <= ms <= MAX_RETRY_AFTER_S * 1000 for ms in hints), hints
        with pytest.raises(openai.RateLimitError) as raised:
            OpenAI(base_url=engine.http + "/v1", api_key="unused", max_retries=0).images.generate(prompt="a fox")
        retry_after = raised.value.response.headers["Retry-After"]
        assert retry_after.isdigit() and 2 <= int(retry_after) <= MAX_RETRY_AFTER_S, retry_after
    finally:
        held.close()
