"""How soon a refused request is told to try again: HTTP's Retry-After and a ZeroMQ Busy's retry_after_ms say the same
honest estimate (engine/dispatch/queue_pace.py), where both said 1 s whatever the engine's state. A real engine with one
SIMULATED worker, a queue of one image held by a long run: the longer nothing leaves the queue, the longer the wait
it says (no time is asserted: the hint is read until it says more than a second).

A 503 no_worker says Retry-After only when the engine has something to go by: its own worker restarting, whose
backoff is known and whose last start was timed (engine/fleet/slot_supervision.py); with no worker of its own,
nothing."""

import asyncio
import time

import aiohttp
import openai
import pytest
from openai import OpenAI
from queue_holding import hold_the_queue
from test_http_app import connect_when_listening
from waiting import eventually, wait_for

from engine.client import ArgusClient
from engine.config import DispatchConfig, LaunchConfig
from engine.http.readiness import readiness
from engine.server import Engine
from engine_process import free_port, in_process_config, start_engine, stop_in_process
from protocols.client_messages import Busy
from protocols.limits import MAX_RETRY_AFTER_S, MIN_RETRY_AFTER_S


@pytest.fixture
def engine(tmp_path):
    # 200 steps at --time-scale 2: a run of about 37 s, which holds the queue's one place
    engine = start_engine(tmp_path, "--time-scale", "2", "--max-queue", "1", backend="sim", workers=1)
    yield engine
    assert engine.stop() == 0


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


IDLE_S = 4


@pytest.mark.timeout(120)
def test_a_refusal_after_an_idle_spell_is_not_told_the_idle_time(engine):
    """An engine asked nothing for a while had freed nothing in that while: the first refusal once its queue filled
    was told a wait as long as the idle spell (30 s past half a minute), where the queue had held its image a moment.
    No time is asserted: the hint is compared with the idle spell."""
    time.sleep(IDLE_S)
    held = hold_the_queue(engine)
    try:
        with ArgusClient(engine.client_address, timeout_s=30) as client:
            reply = client.generate("a fox", width=64, height=64)
        assert isinstance(reply, Busy), reply
        assert reply.retry_after_ms < IDLE_S * 1000, reply
    finally:
        held.close()


async def answer_no_worker(tmp_path, launch: LaunchConfig, before=None) -> aiohttp.ClientResponse:
    """An in-process engine whose requests wait a fifth of a second for a worker: the 503 no_worker to a request sent
    once `before` (a coroutine taking the engine) is done."""
    port = free_port()
    config = in_process_config(tmp_path, port=port, launch=launch, dispatch=DispatchConfig(no_worker_timeout_s=0.2))
    engine = Engine(config)
    running = asyncio.create_task(engine.run())
    try:
        if before is not None:
            await before(engine)
        _, writer = await connect_when_listening(port)
        writer.close()
        async with aiohttp.ClientSession() as session:
            body = {"prompt": "a fox", "size": "64x64"}
            async with session.post(f"http://127.0.0.1:{port}/v1/images/generations", json=body) as response:
                error = (await response.json())["error"]
        assert (response.status, error["code"]) == (503, "no_worker"), error
        return response
    finally:
        await stop_in_process(engine, running)


async def test_no_worker_while_its_own_worker_restarts_says_when_it_should_be_back(tmp_path):
    # a restart 30 s away: the worker is not back before the request is answered
    launch = LaunchConfig(count=1, backend="sim", time_scale=0, restart_backoff_s=30, max_restart_backoff_s=30)

    async def lose_the_worker(engine: Engine) -> None:
        assert await eventually(lambda: readiness(engine)["ready"], timeout_s=60), "the worker never said hello"
        (worker,) = engine.registry.registered()
        assert engine.launcher.kill(worker.hello.worker_id)
        assert await eventually(lambda: not engine.registry.registered(), timeout_s=30)

    response = await answer_no_worker(tmp_path, launch, lose_the_worker)
    retry_after = response.headers.get("Retry-After", "")
    assert retry_after.isdigit() and MIN_RETRY_AFTER_S <= int(retry_after) <= MAX_RETRY_AFTER_S, retry_after


async def test_no_worker_says_no_retry_after_with_nothing_to_go_by(tmp_path):
    """--workers 0: whether a worker connects, and when, is not the engine's to know."""
    response = await answer_no_worker(tmp_path, LaunchConfig(count=0, backend="sim"))
    assert "Retry-After" not in response.headers
