"""The open loop keeps its schedule on the event loop `argus loadgen` runs: no request goes out before its offset."""

import asyncio

import uvloop

from loadgen.arrivals import Arrival
from loadgen.clients import LoadClient, RequestOptions
from loadgen.records import Answer
from loadgen.run import run_load


class _QuickClient(LoadClient):
    async def _exchange(self, prompt, seed, slo_ms) -> Answer:
        await asyncio.sleep(0.002)
        return Answer("busy", code="busy")

    async def close(self) -> None:
        pass


def test_no_request_is_sent_before_its_offset_under_uvloop():
    """uvloop's timers tick in whole milliseconds: one sleep to each offset sent about a third of the requests up to
    1.3 ms early, which no figure showed (max_send_lag_ms is the largest delay)."""
    schedule = [Arrival(0.0037 * i) for i in range(200)]  # offsets off the millisecond, 0.74 s in all

    async def run():
        return await asyncio.wait_for(
            run_load(schedule, ["a red fox"], _QuickClient(RequestOptions()), None, drain_s=1.0, progress=False), 10
        )

    records, _ = uvloop.run(run())
    early = [r for r in records if r["sent_at"] < r["scheduled_at"]]
    assert not early, f"{len(early)} of {len(records)} sent early, the first: {early[0]}"
