"""A scrape of /metrics says the prompt cache as it is: its figures were read on the cache thread once a second and
kept for the scrapes, which said the cache as it was up to a second before (later while the thread was busy)."""

import asyncio
import logging
from types import SimpleNamespace

from waiting import eventually

from engine.metrics import EngineMetrics
from engine.server import Engine
from engine_process import in_process_config


def misses(metrics: EngineMetrics) -> float | None:
    for line in metrics.render().decode().splitlines():
        if line.startswith("argus_cache_misses_total "):
            return float(line.split()[1])
    return None


def a_request() -> SimpleNamespace:
    """What CacheService.count_start reads of a request."""
    return SimpleNamespace(spec=SimpleNamespace(exact=False), steps=50, width=64, height=64, neighbour=None)


async def test_a_scrape_says_what_the_cache_took_in_before_it(tmp_path):
    engine = Engine(in_process_config(tmp_path))
    running = asyncio.create_task(engine.run())
    try:
        assert engine.cache.enabled
        assert await eventually(lambda: misses(engine.metrics) is not None), "no cache series"
        for counted in range(1, 4):
            engine.cache.count_start(a_request(), 0)  # a miss
            await engine.cache.stats()  # taken in on the cache thread
            assert misses(engine.metrics) == counted
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 30)


def test_a_failing_read_of_the_cache_is_logged_and_the_rest_is_scraped(caplog):
    metrics = EngineMetrics()

    def read():
        raise RuntimeError("a bug")

    metrics.cache.read = read
    with caplog.at_level(logging.ERROR, logger="argus"):
        scraped = metrics.render().decode()
    assert "argus_requests_total" in scraped and "argus_cache_misses" not in scraped
    assert "reading the cache's statistics failed" in caplog.text
