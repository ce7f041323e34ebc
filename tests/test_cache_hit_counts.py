"""The cache's hit and miss counters say what each request's image was made from, through a real engine."""

from __future__ import annotations

import asyncio

import pytest
from waiting import wait_for

from engine.client.async_client import AsyncArgusClient
from engine_process import start_engine
from protocols.client_messages import Images

LEVELS = (5, 10, 15, 20, 25)
PROMPT = "a red fox in a snowy forest at dawn, oil painting"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # argus at light load spends its idle capacity on exact images: a near-duplicate is prepared at level 0, and moved
    # up to its K* when it must queue behind the others for the one worker. A sim worker: the counters are the
    # engine's, and its controller plans with the worker's time scale
    engine = start_engine(
        tmp_path_factory.mktemp("hits"), "--policy", "argus", "--time-scale", "0.1", workers=1, backend="sim"
    )
    yield engine
    assert engine.stop() == 0


async def generate_at_once(engine, prompts: list[str]) -> list[Images]:
    async with AsyncArgusClient(engine.client_address) as client:
        replies = await asyncio.gather(*(client.generate(p, width=64, height=64, seed=1) for p in prompts))
    assert all(isinstance(reply, Images) for reply in replies), replies
    return replies


def test_images_moved_up_to_a_cached_latent_are_counted_hits_at_the_level_they_ran(engine):
    """Counted as each request was prepared, they were misses: 7 of 9 images here came from the cache, and
    argus_cache_hits_total stayed at 0, argus_cache_misses_total at 9."""
    asyncio.run(generate_at_once(engine, [PROMPT]))
    replies = asyncio.run(generate_at_once(engine, [PROMPT + "!" * (i + 1) for i in range(8)]))
    made = [0] + [reply.images[0].level for reply in replies]  # the first, in full
    assert any(made), made  # some came from the cache
    hits = {str(k): made.count(k) for k in LEVELS}

    def counted() -> dict[str, float]:
        return {str(k): engine.metric("argus_cache_hits_total", level=str(k)) for k in LEVELS}

    assert wait_for(lambda: counted() == hits and engine.metric("argus_cache_misses_total") == made.count(0))
    # the images by the level they were made at say the same (one image a request)
    assert {str(k): engine.metric("argus_images_total", level=str(k)) for k in (0, *LEVELS)} == {
        "0": made.count(0),
        **hits,
    }
