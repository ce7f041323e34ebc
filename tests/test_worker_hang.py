"""A worker that stops heartbeating is detected, its requests re-dispatched, and it is killed and restarted."""

import asyncio
import concurrent.futures
import os
import signal
import time

import pytest
from waiting import eventually, wait_for

from engine.client import AsyncArgusClient
from engine_process import start_engine
from protocols.client_messages import Images


def test_hung_worker_is_replaced_and_loses_nothing(tmp_path):
    # an image takes about 2.5 s: seconds between both workers starting one and the hang
    engine = start_engine(
        tmp_path, "--time-scale", "0.5", "--max-batch", "1", "--heartbeat-timeout", "2", backend="sim"
    )
    try:

        async def scenario():
            async with AsyncArgusClient(engine.client_address) as client:
                # one running and one in flight behind it on each worker
                tasks = [asyncio.create_task(client.generate(f"p{i}", width=64, height=64)) for i in range(4)]
                assert await eventually(lambda: engine.metric("argus_running_images") == 2, timeout_s=60)
                victim = max(engine.ready()["workers"], key=lambda w: w["load"])
                assert victim["load"] > 0
                os.kill(victim["pid"], signal.SIGSTOP)  # alive, but silent: a hang
                return victim, await asyncio.wait_for(asyncio.gather(*tasks), 60)

        victim, replies = asyncio.run(scenario())
        assert all(isinstance(r, Images) for r in replies)
        # it was stopped before finishing its first image (about 2.5 s): everything it held was served elsewhere
        assert victim["name"] not in {r.images[0].worker for r in replies}
        status = engine.wait_ready(2, timeout_s=30)
        assert victim["name"] not in {w["name"] for w in status["workers"]}
        assert engine.metric("argus_worker_losses_total", cause="heartbeat") == 1
        # the flag that gives a worker longer: the line named none
        assert f"worker {victim['name']} silent for over 2 s (--heartbeat-timeout)" in engine.log_path.read_text()
        assert engine.metric("argus_worker_restarts_total") == 1
    finally:
        assert engine.stop() == 0


def held_past_the_ping_timeout(tmp_path) -> None:
    """test_a_hung_worker_whose_connection_closed_before_its_silence_was_counted_is_replaced's scenario: seconds of
    fixed waits, run in a thread from the module's start (hung_while_held), beside the other test."""
    engine = start_engine(tmp_path, "--time-scale", "0.05", "--heartbeat-timeout", "2", backend="sim", workers=1)
    try:
        (hung,) = engine.wait_ready(1)["workers"]
        os.kill(hung["pid"], signal.SIGSTOP)
        time.sleep(1)
        os.kill(engine.process.pid, signal.SIGSTOP)  # past the ping timeout: its connection is dropped as it resumes
        time.sleep(4)
        os.kill(engine.process.pid, signal.SIGCONT)
        assert wait_for(lambda: engine.metric("argus_worker_restarts_total") == 1, timeout_s=60)
        (replacement,) = engine.wait_ready(1, timeout_s=60)["workers"]
        assert replacement["pid"] != hung["pid"]
    finally:
        os.kill(engine.process.pid, signal.SIGCONT)
        assert engine.stop() == 0


@pytest.fixture(scope="module", autouse=True)
def hung_while_held(tmp_path_factory):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield pool.submit(held_past_the_ping_timeout, tmp_path_factory.mktemp("held"))


def test_a_hung_worker_whose_connection_closed_before_its_silence_was_counted_is_replaced(hung_while_held):
    """libzmq drops a hung worker's connection once its pings go unanswered for the heartbeat timeout, and counts
    that timeout on its own clock: held past it (a paused VM, SIGSTOP), the engine's loop forgives the time held as
    no worker's silence, and the beats that bounce then found the worker gone first. Lost as unreachable, it was left
    hung: never killed, never started again, and the engine served with no worker."""
    hung_while_held.result()
