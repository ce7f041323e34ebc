"""A baseline policy's plan in a running engine (sim workers) says where its images really run, and at what quality."""

import asyncio
import json
import random

import pytest
from waiting import wait_for

from engine.client import AsyncArgusClient
from protocols.client_messages import Images

# each test's engine starts while the tests before it run (tests/engines_ahead.py)
pytestmark = pytest.mark.usefixtures("engines_ahead")

WARM_UP = "a watercolor of a lighthouse on a cliff at sunset"
WORDS = "apple river castle neon violin desert robot whale forest lantern marble comet tiger glacier harbor".split()


def plan(engine) -> dict:
    status, body = engine.get("/plan")
    assert status == 200, body
    return json.loads(body)


async def generate_all(engine, prompts: list[str]) -> list:
    async with AsyncArgusClient(engine.client_address) as client:
        calls = [client.generate(prompt, width=64, height=64) for prompt in prompts]
        return await asyncio.wait_for(asyncio.gather(*calls), 60)


@pytest.mark.own_engine("--policy", "clipper-ht", "--time-scale", "0.02", "--window-s", "0.5", workers=2, backend="sim")
def test_clipper_ht_expects_the_quality_its_far_neighbours_get_at_the_largest_level(own_engine):
    """Prompts far from every cached one are class 0, which Clipper-HT serves at 25 from their neighbour's latent all
    the same; its plan counted them at 0, exact: it expected 92 to 100 where its images were 63 (SIMULATED)."""
    engine = own_engine
    (warm,) = asyncio.run(generate_all(engine, [WARM_UP]))  # a miss: run in full, its latents cached
    assert isinstance(warm, Images) and warm.images[0].level == 0
    # planned for: an exact image
    assert wait_for(lambda: plan(engine)["total_demand_rps"] > 0)
    assert plan(engine)["redirect"]["0"] == {"0": 1.0} and plan(engine)["expected_quality"] == pytest.approx(100)
    rng = random.Random(1)
    far = asyncio.run(generate_all(engine, [" ".join(rng.sample(WORDS, 4)) for _ in range(12)]))
    assert all(isinstance(reply, Images) and reply.images[0].level == 25 for reply in far)
    served = sum(reply.images[0].quality for reply in far) / len(far)
    assert served < 70.0  # the sim quality model: a far neighbour's latent at 25 loses 40 points
    # once the plan has counted them (the miss may share their window), it expects what they got
    assert wait_for(lambda: plan(engine)["redirect"]["0"].get("25", 0.0) > 0.9), json.dumps(plan(engine))
    now = plan(engine)
    far_share = now["redirect"]["0"]["25"]
    assert now["expected_quality"] == pytest.approx((1 - far_share) * 100.0 + far_share * served, abs=3.0)


def without_a_cache(policy: str):
    options = ("--policy", policy, "--no-cache", "--time-scale", "0.02", "--window-s", "0.5")
    return pytest.param(policy, marks=pytest.mark.own_engine(*options, workers=2, backend="sim"), id=policy)


@pytest.mark.parametrize("policy", [without_a_cache(policy) for policy in ("clipper-ht", "nirvana", "proteus")])
def test_without_a_prompt_cache_a_plan_has_level_0_alone(own_engine, policy):
    """With --no-cache every image runs in full: Clipper-HT's plan put every worker at 25 and Proteus's at 5 (/ready
    showed them there, running level-0 images), Proteus expected 99.8 of them, and the plans' routes and /metrics
    named levels 5 to 25 that nothing can be served at."""
    engine = own_engine
    # overloaded, so that a policy that plans for load has a reason to move workers up
    replies = asyncio.run(generate_all(engine, [f"{WARM_UP}, take {i}" for i in range(40)]))
    assert all(isinstance(reply, Images) and reply.images[0].level == 0 for reply in replies)
    assert wait_for(lambda: plan(engine)["total_demand_rps"] > 0)
    now = plan(engine)
    assert now["workers_per_level"] == {"0": 2}
    assert now["redirect"] == {"0": {"0": 1.0}} and list(now["demand_rps"]) == ["0"]
    assert now["expected_quality"] == pytest.approx(100.0)
    assert {worker["level"] for worker in engine.ready()["workers"]} == {0}
    _, metrics = engine.get("/metrics")
    planned = [line for line in metrics.decode().splitlines() if line.startswith("argus_plan_workers{")]
    assert planned == ['argus_plan_workers{level="0"} 2.0']
