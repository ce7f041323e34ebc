"""run_load on the event loop `argus loadgen` runs, uvloop, whose timers tick in whole milliseconds: no request goes out
before its offset, and none is given up before the hard end."""

import asyncio

import uvloop
from load_clients import BusyAfter

from loadgen.arrivals import Arrival
from loadgen.run import run_load


def test_no_request_is_sent_before_its_offset_under_uvloop():
    """uvloop's timers tick in whole milliseconds: one sleep to each offset sent about a third of the requests up to
    1.3 ms early, which no figure showed (max_send_lag_ms is the largest delay)."""
    schedule = [Arrival(0.0037 * i) for i in range(200)]  # offsets off the millisecond, 0.74 s in all

    async def run():
        return await asyncio.wait_for(
            run_load(schedule, ["a red fox"], BusyAfter(0.002), None, drain_s=1.0, progress=False), 10
        )

    records, _ = uvloop.run(run())
    early = [r for r in records if r["sent_at"] < r["scheduled_at"]]
    assert not early, f"{len(early)} of {len(records)} sent early, the first: {early[0]}"


def test_no_request_is_given_up_before_the_drain_has_passed_under_uvloop():
    """A --drain-s equal to --slo-ms is to give an unanswered request its whole SLO: one wait for the drain ended up to
    0.23 ms early in 8 of 30 runs, the request counted client_timeout, a violation, before its SLO had passed."""

    async def runs():
        short = []
        for i in range(30):
            drain_s = 0.0131 + 0.0001 * i  # off the millisecond
            records, summary = await asyncio.wait_for(
                run_load(
                    [Arrival(0.0)], ["a red fox"], BusyAfter(30), drain_s * 1000.0, drain_s=drain_s,
                    progress=False,
                ),
                10,
            )  # fmt: skip
            assert records[0]["code"] == "client_timeout"
            if summary["duration_s"] - records[0]["sent_at"] < drain_s:
                short.append(summary["duration_s"] - records[0]["sent_at"] - drain_s)
        return short

    short = uvloop.run(runs())
    assert not short, f"{len(short)} of 30 given up early, by {min(short) * 1000:.3f} ms at most"
