"""What GET /metrics of a real engine tells an operator: Prometheus's names, types and base units."""

import pytest
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

from engine.client import ArgusClient
from engine_process import start_engine
from protocols.client_messages import Images


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("metrics"), "--time-scale", "0", backend="sim")
    with ArgusClient(engine.client_address, timeout_s=60) as client:
        assert isinstance(client.generate("a red fox in the snow", width=64, height=64), Images)
    yield engine
    assert engine.stop() == 0


def families(engine) -> dict:
    return {family.name: family for family in text_string_to_metric_families(engine.get("/metrics")[1].decode())}


def test_running_counts_are_counters_and_times_are_in_seconds(engine):
    # the cache's counts reach /metrics within its stats interval; they were gauges, without _total
    assert wait_for(lambda: engine.metric("argus_cache_misses_total") == 1)
    found = families(engine)
    for name in ("argus_cache_hits", "argus_cache_misses", "argus_cache_evictions"):
        assert found[name].type == "counter", name
    # the solve time was argus_plan_solve_ms, in ms
    assert found["argus_plan_solve_seconds"].type == "histogram"
    assert not [name for name in found if name.endswith("_ms")]
