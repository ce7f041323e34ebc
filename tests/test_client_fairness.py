"""Service shared among clients (engine/dispatch/fair_share.py), through a real engine, sim workers and ZeroMQ and HTTP
clients: a light client's requests are served beside a client keeping a hundred requests in flight, and a client alone
is served as before."""

import asyncio
from collections import Counter

import aiohttp
import pytest
from waiting import wait_for

from engine.client import ClientClosed
from engine.client.async_client import AsyncArgusClient
from engine_process import start_engine
from protocols.client_messages import Error, Images

FLOOD_IN_FLIGHT = 100
LIGHT_CLIENTS, LIGHT_REQUESTS = 3, 3
# SIMULATED: sim workers at a twentieth of SD-XL's time, an image (5.1 s) in a quarter second. Every wait below is in
# such images, as the engine counts its own (its latency profile and default SLO scale with the workers' time): at
# another scale the test runs the same, sooner or later
TIME_SCALE = 0.05
IMAGE_S = 5.1 * TIME_SCALE
LIGHT_SLO_MS = round(5 * IMAGE_S * 1000)  # a light request is due in five images
LIGHT_PAUSE_S = 2 * IMAGE_S  # and sent two after the client's last was answered


def outcome(reply) -> str:
    if isinstance(reply, Images):
        return "ok"
    return reply.code if isinstance(reply, Error) else type(reply).__name__


async def flood_until(address: str, done: asyncio.Event, slo_ms: float | None) -> Counter:
    """One client (one socket) keeping FLOOD_IN_FLIGHT requests in flight until `done`: the outcomes of those answered
    by then. It then closes, which cancels the others at the engine (waited for, they took 12 s a test)."""
    outcomes = Counter()
    fields = {"slo_ms": slo_ms} if slo_ms else {}
    client = AsyncArgusClient(address)

    async def one_at_a_time():
        while True:
            outcomes[outcome(await client.generate("a flood", width=64, height=64, **fields))] += 1

    senders = [asyncio.create_task(one_at_a_time()) for _ in range(FLOOD_IN_FLIGHT)]
    await done.wait()
    await client.close()
    ended = await asyncio.gather(*senders, return_exceptions=True)
    assert {type(end) for end in ended} == {ClientClosed}, ended
    return outcomes


async def light(engine, name: int) -> Counter:
    """A client sending a request due in LIGHT_SLO_MS, LIGHT_PAUSE_S after its last was answered: over ZeroMQ (its
    socket names it), or for the last one over HTTP (named by its `user`)."""
    outcomes = Counter()
    async with AsyncArgusClient(engine.client_address) as client, aiohttp.ClientSession() as session:
        await asyncio.sleep((1 + name * 0.7) * IMAGE_S)  # the flood's backlog is there first
        for _ in range(LIGHT_REQUESTS):
            if name < LIGHT_CLIENTS - 1:
                reply = await client.generate(f"light {name}", width=64, height=64, slo_ms=LIGHT_SLO_MS)
                outcomes[outcome(reply)] += 1
            else:
                body = {"prompt": f"light {name}", "size": "64x64", "slo_ms": LIGHT_SLO_MS, "user": f"light {name}"}
                async with session.post(engine.http + "/v1/images/generations", json=body) as response:
                    answer = await response.json()
                    outcomes["ok" if response.status == 200 else answer["error"]["code"]] += 1
            await asyncio.sleep(LIGHT_PAUSE_S)
    return outcomes


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # the queue bound is far above what the flood keeps in flight, so the client shares (admission) never act
    folder = tmp_path_factory.mktemp("fairness")
    engine = start_engine(folder, "--time-scale", str(TIME_SCALE), "--max-queue", "256", workers=2, backend="sim")
    yield engine
    engine.stop()


def test_a_lone_client_is_served_as_before(engine):
    """A lone client keeping a hundred requests in flight has the whole fleet, and every request is served (first in
    this file: no other client has shared the engine's fleet yet)."""

    async def run():
        done = asyncio.Event()
        flood = asyncio.create_task(flood_until(engine.client_address, done, None))
        await asyncio.sleep(8 * IMAGE_S)
        done.set()
        return await flood

    flood = asyncio.run(asyncio.wait_for(run(), 180))
    assert set(flood) == {"ok"} and flood["ok"] > LIGHT_CLIENTS * LIGHT_REQUESTS
    assert engine.metric("argus_fair_deferrals_total") == 0  # no one to share with
    assert wait_for(engine.idle)  # the flood's requests left in flight cancelled


@pytest.mark.parametrize("flood_slo_ms", [None, LIGHT_SLO_MS])
def test_light_clients_are_served_beside_a_flooding_client(engine, flood_slo_ms):
    """By deadline alone, every light request was answered deadline_exceeded (docs/reliability.md): the flood held
    the earliest deadlines, or (without slo_ms) ranked as due one --slo-ms after it came, went first for ever."""

    async def run():
        done = asyncio.Event()
        flood = asyncio.create_task(flood_until(engine.client_address, done, flood_slo_ms))
        lights = await asyncio.gather(*(light(engine, name) for name in range(LIGHT_CLIENTS)))
        done.set()
        return sum(lights, Counter()), await flood

    lights, flood = asyncio.run(asyncio.wait_for(run(), 180))
    assert sum(lights.values()) == LIGHT_CLIENTS * LIGHT_REQUESTS
    assert set(lights) <= {"ok", "deadline_exceeded"}
    assert lights["ok"] > LIGHT_CLIENTS * LIGHT_REQUESTS // 2, lights  # none before
    assert engine.metric("argus_fair_deferrals_total") > 0  # the flood's backlog put back (/metrics)
    # the flood is served beside them (the fleet's rest is its own); without a deadline, it is never answered late
    if flood_slo_ms is None:
        assert set(flood) == {"ok"} and flood["ok"] > LIGHT_CLIENTS * LIGHT_REQUESTS
    else:
        assert set(flood) == {"ok", "deadline_exceeded"} and flood["ok"] > LIGHT_CLIENTS * LIGHT_REQUESTS
    assert wait_for(engine.idle)
