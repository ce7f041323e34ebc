"""Overload: --max-queue bounds admission; past it HTTP answers 429 with Retry-After and ZeroMQ Busy at once;
under about ten times the cluster's capacity every request is still answered and the engine's memory stays flat.

A real engine with SIMULATED workers (sim backend). Replies are counted per
request id on the wire (loadgen/bench/chaos_bench.py's ledger and doors). No
assertion on any timing: "at once" is shown by order (the Busy replies come back
while every admitted request is still unanswered and cannot be answered).
The full minute is `python -m loadgen.bench.chaos_bench --duration 60 --load 10
--kill-every 0 --min-kills 0 --max-queue 16` (docs/reliability.md).
"""

import asyncio
import os
import signal
import time

import pytest

from engine_process import start_engine
from loadgen.bench.chaos_ledger import HttpDoor, Ledger, ZmqDoor
from loadgen.bench.process_watch import RssSampler, metrics_vs_clients, parse_metrics

WORKERS = 2
TIME_SCALE = 0.05  # sim: 0.05 x 5.1 s, about 0.26 s per 50-step image at batch 1
CAPACITY_RPS = WORKERS / (TIME_SCALE * 5.1)  # about 7.8 images/s
MAX_QUEUE = 16
EXTRA = 8  # requests past the bound in the burst
OVERLOAD = 10.0  # times the capacity
# long enough that the second half's peak would show a leak of ~80 KB a request over the 30 MB margin
SUSTAIN_S = 10.0
HTTP_SHARE = 0.3
# a leak test, not a speed test: the second half's peak may not exceed the first half's by more than this
RSS_MARGIN_MB = 30.0


@pytest.mark.timeout(180)
def test_overload_is_bounded_answered_and_flat(tmp_path):
    # heartbeat timeout well above the few seconds the workers are stopped for in the first phase
    engine = start_engine(
        tmp_path,
        "--time-scale",
        str(TIME_SCALE),
        "--max-batch",
        "1",
        "--max-queue",
        str(MAX_QUEUE),
        "--heartbeat-timeout",
        "30",
        workers=WORKERS,
        backend="sim",
    )
    try:
        observed = asyncio.run(asyncio.wait_for(_scenario(engine), 150))
    finally:
        code = engine.stop()
    print(observed["note"])
    burst, summary, rss, queued = observed["burst"], observed["summary"], observed["rss"], observed["queued"]

    # 1. the bound: exactly MAX_QUEUE admitted; every request past it answered Busy (ZeroMQ) or 429 with
    # Retry-After (HTTP) while no admitted one could finish: Busy does not wait behind admitted work
    assert burst["busy_ids_are_the_extra"] and burst["frozen_replies"] == [("busy", "busy")], burst
    assert burst["http"] == [("busy", "busy")] * 4 and burst["retry_after_missing"] == 0, burst
    assert burst["outcomes"] == {"images": MAX_QUEUE, "busy": EXTRA + 4}, burst

    # 2. sustained overload: every request answered once, as images or busy (nothing silent, nothing twice)
    assert summary["lost"] == 0, summary["by_door"]
    assert summary["duplicates"] == 0, summary["duplicate_ids"]
    assert summary["replies"] == summary["sent"] > 0
    assert set(summary["outcomes"]) <= {"images", "busy", "error"}
    assert summary["errors"] == {}, summary["errors"]
    assert summary["outcomes"]["images"] > 0 and summary["outcomes"]["busy"] > summary["outcomes"]["images"]
    for door in ("zmq", "http"):
        assert summary["by_door"][door].get("busy", 0) > 0, summary["by_door"]
    assert summary["http_busy_without_retry_after"] == 0
    assert summary["http_transport_errors"] == {} and summary["unexpected_replies"] == 0
    assert max(queued) <= MAX_QUEUE, queued

    # 3. memory: flat under sustained overload
    half = len(rss) // 2
    assert half >= 10, rss
    first, second = max(mb for _, mb in rss[:half]), max(mb for _, mb in rss[half:])
    assert second <= first + RSS_MARGIN_MB, rss

    # 4. the engine's own counts agree with what the clients saw (burst and sustained phases together)
    assert observed["metrics"]["match"], observed["metrics"]
    assert code == 0


async def _scenario(engine) -> dict:
    pids = [w["pid"] for w in engine.ready()["workers"]]
    ledger = Ledger()
    zmq_door = ZmqDoor(engine.client_address, ledger, size=64)
    http_door = HttpDoor(engine.http, ledger, size=64, timeout_s=90.0)
    zmq_door.start()
    try:
        burst = await _burst(engine, pids, ledger, zmq_door, http_door)
        overload_ledger = Ledger()
        zmq_overload = ZmqDoor(engine.client_address, overload_ledger, size=64)
        http_overload = HttpDoor(engine.http, overload_ledger, size=64, timeout_s=90.0)
        zmq_overload.start()
        try:
            rss, queued, sent_s = await _sustain(engine, overload_ledger, zmq_overload, http_overload)
            await _until(lambda: not overload_ledger.unanswered, 60.0)
            await asyncio.sleep(1.0)  # a late second reply would show up here
            metrics = parse_metrics(await http_door.get_text("/metrics"))
        finally:
            await zmq_overload.close()
            await http_overload.close()
    finally:
        await zmq_door.close()
        await http_door.close()
    summary = overload_ledger.summary()
    both = _merge(ledger.summary(), summary)
    note = (
        f"\noverload (SIMULATED workers): {WORKERS} x sim, capacity ~{CAPACITY_RPS:.1f} img/s, --max-queue {MAX_QUEUE};"
        f" {summary['sent']} requests in {sent_s:.1f} s ({summary['sent'] / sent_s:.0f} req/s,"
        f" ~{summary['sent'] / sent_s / CAPACITY_RPS:.1f}x capacity)\n"
        f"  outcomes {summary['outcomes']} by door {summary['by_door']} lost {summary['lost']}"
        f" duplicates {summary['duplicates']}\n"
        f"  argus_queued_images max {max(queued)} over {len(queued)} samples\n"
        f"  engine RSS MB (t s, MB) {[(t, round(mb, 1)) for t, mb in rss]}\n"
        f"  burst {burst}\n  metrics {metrics_vs_clients(metrics, both)}"
    )
    return {
        "burst": burst,
        "summary": summary,
        "rss": rss,
        "queued": queued,
        "metrics": metrics_vs_clients(metrics, both),
        "note": note,
    }


async def _burst(engine, pids, ledger: Ledger, zmq_door: ZmqDoor, http_door: HttpDoor) -> dict:
    """Freezes the workers (SIGSTOP) so nothing admitted can finish, fills the queue and goes past it."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        ids = [await zmq_door.send() for _ in range(MAX_QUEUE + EXTRA)]
        await _until(lambda: len(ledger.replies) >= EXTRA, 20.0)
        http_ids = [http_door.send() for _ in range(4)]
        await _until(lambda: all(i in ledger.replies for i in http_ids), 20.0)
        await asyncio.sleep(0.2)  # room for anything else that might (and must not) come back
        # what came back while the workers were frozen: (zmq ids, their replies), (http replies)
        frozen = {i: ledger.replies[i][0][:2] for i in ids if i in ledger.replies}
        http = [ledger.replies[i][0][:2] if i in ledger.replies else None for i in http_ids]
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    await _until(lambda: not ledger.unanswered, 60.0)
    return {
        "busy_ids_are_the_extra": sorted(frozen) == sorted(ids[MAX_QUEUE:]),
        "frozen_replies": sorted(set(frozen.values())),
        "http": http,
        "outcomes": ledger.summary()["outcomes"],
        "retry_after_missing": ledger.http_busy_without_retry_after,
    }


async def _sustain(engine, ledger: Ledger, zmq_door: ZmqDoor, http_door: HttpDoor):
    """OVERLOAD x capacity, open loop, for SUSTAIN_S; samples the engine's RSS and its queued-images gauge."""
    import random

    rng = random.Random(3)
    sampler = RssSampler(engine.process.pid, every_s=0.1)  # 100 samples over SUSTAIN_S
    queued: list[float] = []
    rate = OVERLOAD * CAPACITY_RPS
    total = int(rate * SUSTAIN_S)

    async def watch_queue() -> None:
        while True:
            queued.append(parse_metrics(await http_door.get_text("/metrics"))["argus_queued_images"][""])
            await asyncio.sleep(0.5)

    sampler.start()
    watcher = asyncio.create_task(watch_queue())
    started = time.perf_counter()
    try:
        for i in range(total):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if rng.random() < HTTP_SHARE:
                http_door.send()
            else:
                await zmq_door.send()
        sent_s = time.perf_counter() - started
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await sampler.stop()
    return sampler.samples, queued, sent_s


async def _until(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _merge(a: dict, b: dict) -> dict:
    outcomes = {k: a["outcomes"].get(k, 0) + b["outcomes"].get(k, 0) for k in {*a["outcomes"], *b["outcomes"]}}
    errors = {k: a["errors"].get(k, 0) + b["errors"].get(k, 0) for k in {*a["errors"], *b["errors"]}}
    return {"outcomes": outcomes, "errors": errors}
