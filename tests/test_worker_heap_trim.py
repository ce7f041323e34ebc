"""A worker gives back to the system what a large batch freed: its RSS falls back toward where it was before the batch.

glibc keeps freed memory in its heaps: a tiny worker's batch of 8 images of 256x256 left its RSS 47 to 107 MB up until
it exited. The worker now calls malloc_trim(0) after a batch that grew
its RSS noticeably (workers/heap_trim.py); a small batch is not worth one."""

from __future__ import annotations

import platform
import subprocess

import pytest
from fake_engine import FakeEngine

from engine_process import start_worker
from protocols.worker_messages import (
    PROTOCOL_VERSION,
    BatchDone,
    Generate,
    GenerateItem,
    Heartbeat,
    Hello,
    ItemDone,
    Welcome,
)
from workers import heap_trim
from workers.heap_trim import HeapTrim

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


def status_bytes(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def run(engine: FakeEngine, batch_id: int, size: int, count: int) -> None:
    items = [GenerateItem(f"r{batch_id}-{i}", f"a lighthouse at dusk, {i}", i) for i in range(count)]
    engine.send(Generate(batch_id, 0, 4, size, size, 5.0, "png", items))
    outcomes = engine.receive(BatchDone).outcomes
    assert all(isinstance(o, ItemDone) for o in outcomes), outcomes


@pytest.mark.timeout(300)
def test_a_large_batch_leaves_the_workers_rss_near_where_it_was_before():
    engine = FakeEngine()
    worker = start_worker(engine.address, "tiny", "--worker-id", "w0", "--threads", "1", stderr=subprocess.DEVNULL)
    try:
        engine.receive(Hello)
        engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
        run(engine, 1, 64, 1)  # what a first run sets up for good (torch's lazy state) is no batch's growth
        before = status_bytes(worker.pid, "VmRSS")
        try:  # the peak is counted from here (Linux 4.0 and later)
            with open(f"/proc/{worker.pid}/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
        except OSError:
            pytest.skip("the peak RSS cannot be reset")
        # two images of the largest size: growth four times the trim's bound, and (untrimmed) 47 to 84 MB left behind
        run(engine, 2, 256, 2)
        engine.receive(Heartbeat)  # sent once the batch is over, its trim done
        peak = status_bytes(worker.pid, "VmHWM")
        after = status_bytes(worker.pid, "VmRSS")
    finally:
        worker.kill()
        worker.wait()
        engine.close()
    grown = peak - before
    assert grown >= heap_trim.TRIM_AFTER_GROWTH_BYTES, f"the batch grew the RSS by {grown >> 20} MB only"
    # measured: -2 to +2 MB of the 126 to 196 MB it grew by at its peak; without the trim, 47 to 84 MB
    assert after - before < grown / 20, f"RSS {before >> 20} MB, peak {peak >> 20} MB, after {after >> 20} MB"


def test_a_batch_that_grew_the_rss_little_is_not_trimmed(monkeypatch):
    rss = iter([100 << 20, 110 << 20, 150 << 20, 100 << 20])
    monkeypatch.setattr(heap_trim, "resident_bytes", lambda: next(rss))
    trims: list[int] = []
    monkeypatch.setattr(heap_trim, "_malloc_trim", lambda: trims.append)
    trim = HeapTrim(growth_bytes=32 << 20)
    with trim:  # 10 MB
        pass
    assert trims == []
    with trim:  # 150 MB: 50 MB since the first batch
        pass
    assert trims == [0]


def test_growth_of_many_batches_each_under_the_bound_is_trimmed_once_it_adds_up(monkeypatch):
    """Measured batch by batch, a worker whose batches each left 20 MB behind was never trimmed however much they
    added up: growth counts from the RSS after the last trim (or the first batch)."""
    rss = iter([100 << 20, 120 << 20, 140 << 20, 104 << 20, 124 << 20])
    monkeypatch.setattr(heap_trim, "resident_bytes", lambda: next(rss))
    trims: list[int] = []
    monkeypatch.setattr(heap_trim, "_malloc_trim", lambda: trims.append)
    trim = HeapTrim(growth_bytes=32 << 20)
    with trim:  # 100 -> 120 MB: 20 MB since the first batch
        pass
    assert trims == []
    with trim:  # 120 -> 140 MB: 40 MB since the first batch, trimmed to 104
        pass
    assert trims == [0]
    with trim:  # 104 -> 124 MB: 20 MB since the trim
        pass
    assert trims == [0]
