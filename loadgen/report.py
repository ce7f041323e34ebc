"""From per-request records to a summary; records to JSONL, the summary to JSON and a text table.

Definitions (docs/loadgen.md has them in full):
- image replies: records with outcome ok or late (the request got its image).
- throughput_rps = image replies / duration_s; goodput_rps = ok / duration_s (none when nothing was sent),
  where duration_s runs from the start of the run to its last answer, or to when it was stopped if that came later.
- slo_violation_ratio = (late + rejected + error + deadline_exceeded) / (sent - cancelled): a cancelled request's
  fate is unknown, so it is neither a violation nor a success, and is left out.
- latency percentiles, quality (the sim workers' modelled figure), estimated quality (the engine's, any backend),
  level mix and cache hit rate are over image replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import queue
import stat
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from engine.system.whole_files import output_of_this_process, written_whole
from loadgen.pipe_watch import PipeWatch
from loadgen.records import CLIENT_TIMEOUT, INTERRUPTED, OUTCOMES, VIOLATIONS, Record
from loadgen.stats import p99_caveat, percentile
from loadgen.wording import figure, percent

LevelSample = tuple[float, dict[int, int]]
# a generator this far behind its schedule did not offer the arrivals it reports (a sim engine at --time-scale 0.01
# saw them 10 s late): the summary says so where it is read, not only as a number on its last line
SEND_LAG_WARNING_MS = 100.0
# beside the quality, when simulated workers made the images: their quality is modelled, not measured
SIMULATED_QUALITY = "  (SIMULATED workers: modelled)"
# above the summary and in the plot's title, when simulated workers made the images: the run times are a scaled
# profile too, and a figure read without it (a plot passed on alone) passed for a measurement
SIMULATED_RUN = "SIMULATED (figures from sim workers)"
# how long the end of a run waits for a records writer that writes nothing: a FIFO no one reads, or whose reader
# stopped reading, held the summary back for good (the writer waiting in its open or a write). Any write that goes
# through, and any byte a pipe's reader takes (however slowly it reads: loadgen/pipe_watch.py), starts the wait again
RECORDS_STALL_S = 10.0
# looks at a pipe's reader this many times in RECORDS_STALL_S
_STALL_LOOKS = 10
# how often the writer tries again to open a FIFO no one has opened to read yet
_FIFO_RETRY_S = 0.1


def summarize(
    records: Sequence[Record],
    *,
    slo_ms: float | None,
    duration_s: float,
    worker_levels: Sequence[LevelSample] = (),
    worker_levels_source: str | None = None,
    planned: int | None = None,
    stopped_s: float | None = None,
) -> dict[str, Any]:
    """`planned`: the requests the schedule held; more than were sent when the run was cut short, `stopped_s` (from
    its start) into it."""
    sent = len(records)
    outcomes = {name: 0 for name in OUTCOMES}
    outcomes.update(Counter(r["outcome"] for r in records))
    served = [r for r in records if r["outcome"] in ("ok", "late")]
    latencies = [r["latency_ms"] for r in served if r["latency_ms"] is not None]
    qualities = [r["quality"] for r in served if r["quality"] is not None]
    estimates = [r["estimated_quality"] for r in served if r["estimated_quality"] is not None]
    levels = Counter(r["level"] for r in served if r["level"] is not None)
    # a hit is an image resumed from a cached latent; a neighbour found but not used (level 0) is not one
    hits = sum(1 for r in served if (r["level"] or 0) > 0)
    scheduled = [r["scheduled_at"] for r in records]
    # arrivals per second between the first and the last, as --rate counts them (arrivals.mean_rate): sent / the last
    # offset counted a gap too many, so a trace of one request a second, its first 3 sent, said 'offered 1.5/s'
    send_span_s = max(scheduled, default=0.0) - min(scheduled, default=0.0)
    # a cancelled request is neither a violation nor a success: in the denominator, the requests a run stopped early
    # cancelled made it look better (8 cancelled of 10 sent and 1 rejected said 10%, where 1 of the 2 known failed)
    judged = sent - outcomes["cancelled"]
    return {
        "planned": sent if planned is None else planned,
        "sent": sent,
        "outcomes": outcomes,
        "error_codes": dict(Counter(r["code"] or "" for r in records if r["outcome"] not in ("ok", "late"))),
        "slo_ms": slo_ms,
        "duration_s": duration_s,
        "stopped_s": stopped_s,
        "send_span_s": send_span_s,
        "offered_rps": (sent - 1) / send_span_s if send_span_s > 0 else None,
        # of a run that sent nothing, none: '0/s' read as an engine that served none of what it was sent
        "throughput_rps": len(served) / duration_s if sent and duration_s > 0 else None,
        "goodput_rps": outcomes["ok"] / duration_s if sent and duration_s > 0 else None,
        "slo_violation_ratio": sum(outcomes[v] for v in VIOLATIONS) / judged if judged else None,
        "latency_p50_ms": percentile(latencies, 50, empty=None),
        "latency_p90_ms": percentile(latencies, 90, empty=None),
        "latency_p99_ms": percentile(latencies, 99, empty=None),
        # workers report quality already in percent of the exact (K=0) image
        "mean_quality_pct": sum(qualities) / len(qualities) if qualities else None,
        # the engine's estimate of every image, by its level and neighbour's similarity: what a real backend has
        "mean_estimated_quality_pct": sum(estimates) / len(estimates) if estimates else None,
        # simulated workers made them: the quality is modelled, the run times a scaled profile
        "simulated": any(r["simulated"] for r in served),
        # str keys, so a summary read back from JSON is equal to the one written
        "level_mix": {str(k): n / sum(levels.values()) for k, n in sorted(levels.items())},
        "cache_hit_rate": hits / len(served) if served else None,
        "max_send_lag_ms": max(((r["sent_at"] - r["scheduled_at"]) * 1000.0 for r in records), default=None),
        "worker_levels": [[t, {str(k): n for k, n in sorted(counts.items())}] for t, counts in worker_levels],
        "worker_levels_source": worker_levels_source,
    }


def write_records(records: Sequence[Record], path: str | Path) -> None:
    """One JSON object a line, written whole (a write that fails leaves loadgen's, written as it went); a link is
    written through, and stays a link (replaced by a file, its target was left as it was)."""
    with written_whole(path) as f:
        _write_lines(records, f)


def _write_lines(records: Sequence[Record], f: TextIO) -> None:
    for record in records:
        f.write(json.dumps(record))
        f.write("\n")


@contextlib.asynccontextmanager
async def records_as_they_come(
    path: str | Path, on_failure: Callable[[OSError], None]
) -> AsyncIterator[Callable[[Record], None]]:
    """A writer of one record a line, each on disk moments after its request ends: a run killed (or its terminal
    closed) keeps the records of the requests that ended before. Leaving waits for every record given to be written,
    however the run ended, as long as the writer writes or its pipe's reader reads: one that has written nothing, to a
    reader that has read nothing, for RECORDS_STALL_S is given up.

    The callback only queues the record, on the event loop; a thread of the writer's encodes and writes it. Written
    on the loop, a disk or a pipe that stalled (NFS, a full page cache, a reader that did not read) stalled the loop,
    and with it the open-loop sends: a pipe whose reader held off for 5 s had sends 2.7 s late at 100 requests/s
    (once its 64 KB were full); 1.5 ms with the thread. A FIFO no one reads yet is opened by the thread once someone
    does: the run does not wait for a reader, its records do.

    A write that fails (a full disk, a pipe's reader gone) is passed to `on_failure` once, on the loop, and the writer
    writes no more: the run goes on, its records are still held for the end. Raising would have ended the run
    unreported, after a traceback for each request that ended meanwhile. A writer given up at the end is passed to it
    as a TimeoutError."""
    loop = asyncio.get_running_loop()
    f = await asyncio.to_thread(_open_unless_unread, path)
    # unbounded, but each entry is a record the run holds anyway to the end (run_load's list): a writer held up costs
    # a reference a record, and the loop never waits to queue one. None: the run is over
    queued: queue.SimpleQueue[Record | None] = queue.SimpleQueue()
    failed = threading.Event()
    given_up = threading.Event()
    wrote_at = 0.0  # time.monotonic() of the writer's last write that went through
    reader = PipeWatch()

    def write_queued() -> None:
        nonlocal f, wrote_at
        try:
            while f is None:
                if given_up.wait(_FIFO_RETRY_S):
                    return
                f = _open_unless_unread(path)
            reader.follow(f.fileno())
            while True:
                batch = [queued.get()]
                with contextlib.suppress(queue.Empty):  # those queued meanwhile: one flush for them all
                    while True:
                        batch.append(queued.get_nowait())
                over = batch[-1] is None  # put last, once the run has ended
                # a record is not changed once made: this thread may encode it while the loop goes on. One write
                # each, so that each that goes through is seen to (a write waits only as the buffer goes out; what a
                # pipe's reader takes meanwhile, the end watches itself)
                for record in batch:
                    if record is not None:
                        f.write(json.dumps(record) + "\n")
                        wrote_at = time.monotonic()
                f.flush()
                wrote_at = time.monotonic()
                if over:
                    return
        except OSError as exc:
            failed.set()
            if not given_up.is_set():  # else said already, and the loop may be gone
                with contextlib.suppress(RuntimeError):  # closed while this thread looked
                    loop.call_soon_threadsafe(on_failure, exc)
        finally:
            if f is not None:
                with contextlib.suppress(OSError):  # the flush of what a failed write left in the buffer fails again
                    f.close()

    def write(record: Record) -> None:
        if not failed.is_set():
            queued.put(record)

    # a daemon: a writer given up, stuck on a pipe nobody reads, must not keep the process alive
    writer = threading.Thread(target=write_queued, name="loadgen-records", daemon=True)
    writer.start()
    try:
        yield write
    finally:
        queued.put(None)
        try:
            # the end's start, then the last time the pipe was seen read from (or written to, by a write under way)
            moved_at, unread = time.monotonic(), reader.unread()
            while writer.is_alive():
                if (now_unread := reader.unread()) != unread:
                    moved_at, unread = time.monotonic(), now_unread
                stalled_until = max(moved_at, wrote_at) + RECORDS_STALL_S
                if time.monotonic() >= stalled_until:
                    given_up.set()
                    on_failure(TimeoutError(errno.ETIMEDOUT, f"nothing could be written for {RECORDS_STALL_S:g} s"))
                    break
                look_in = min(RECORDS_STALL_S / _STALL_LOOKS, stalled_until - time.monotonic())
                await asyncio.to_thread(writer.join, look_in)
        finally:
            reader.close()


def _open_unless_unread(path: str | Path) -> TextIO | None:
    """`path` opened to write; None for a FIFO no one has open to read, whose plain open waits for a reader for good."""
    if (own := output_of_this_process(path)) is not None:
        # the process's own open file, offset and all: opened anew, a file would be truncated, and the summary
        # printed at the end would write over the records from its start
        return open(os.dup(own), "w")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO and stat.S_ISFIFO(os.stat(path).st_mode):  # not a socket's /proc/self/fd/N
            return None
        raise
    os.set_blocking(fd, True)  # the writer's own thread waits on it, not the loop
    return open(fd, "w")


def read_records(path: str | Path) -> list[Record]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_summary(summary: dict[str, Any], path: str | Path) -> None:
    with written_whole(path) as f:
        json.dump(summary, f, indent=2)
        f.write("\n")


def format_summary(summary: dict[str, Any]) -> str:
    """A few aligned lines for a terminal."""

    def num(value: Any, unit: str) -> str:
        return "n/a" if value is None else f"{figure(value)}{unit}"

    def ms(value: Any) -> str:
        # whole milliseconds: three significant digits printed a p99 of 14,951 ms as 1.5e+04, at a 15,000 ms SLO. Below
        # one, three significant digits: an --slo-ms of 0.5 was printed 'SLO 0 ms'
        if value is None:
            return "n/a"
        return f"{value:,.0f} ms" if value >= 1 or value == 0 else f"{value:.3g} ms"

    outcomes = "  ".join(f"{name} {n}" for name, n in summary["outcomes"].items())
    mix = "  ".join(f"K={k}: {percent(share, 0)}" for k, share in summary["level_mix"].items()) or "n/a"
    ratio = summary["slo_violation_ratio"]
    cancelled = summary["outcomes"]["cancelled"]  # left out of the ratio, which says so
    slo = summary["slo_ms"]
    # without an SLO nothing is late, and the ratio counts only the requests that failed: printed as 'SLO violations
    # 100.0% (SLO n/a)', a run whose every request failed read as one that missed an SLO it never had
    violations_name = "SLO violations" if slo is not None else "failed"
    if ratio is None:
        violations = f"n/a: all {cancelled} cancelled" if cancelled else "n/a"
    else:
        of = f" of the {summary['sent'] - cancelled} not cancelled" if cancelled else ""
        why = f"SLO {ms(slo)}" if slo is not None else "rejected, error or deadline_exceeded; no SLO, so none late"
        violations = f"{percent(ratio, 1)}{of}  ({why})"
    # why the requests without an image got none: the outcomes say how many, only the codes say what went wrong (a
    # refused CURVE key and an engine gone are both 'error'). Most frequent first
    codes = sorted(summary["error_codes"].items(), key=lambda item: (-item[1], item[0]))
    sent = _sent(summary)
    if summary["planned"] > summary["sent"]:
        sent += f", cut short: {summary['planned']} planned"
    rows = [
        ("sent", sent),
        ("outcomes", outcomes),
        *([("error codes", "  ".join(f"{code} {n}" for code, n in codes))] if codes else []),
        # the unit goes with the figure: a run stopped before its first send printed 'n/a/s'
        ("throughput", f"{num(summary['throughput_rps'], '/s')}   goodput {num(summary['goodput_rps'], '/s')}"),
        (violations_name, violations),
        ("latency", "   ".join(f"p{q} {ms(summary[f'latency_p{q}_ms'])}" for q in (50, 90, 99)) + _tail(summary)),
        ("quality", num(summary["mean_quality_pct"], " %") + (SIMULATED_QUALITY if summary["simulated"] else "")),
        # by each image's level and neighbour's similarity, not a measurement
        ("est. quality", num(summary["mean_estimated_quality_pct"], " %") + "  (the engine's estimate)"),
        ("level mix", mix),
        ("cache hits", "n/a" if summary["cache_hit_rate"] is None else percent(summary["cache_hit_rate"], 1)),
        ("max send lag", num(summary["max_send_lag_ms"], " ms")),
    ]
    if (summary["max_send_lag_ms"] or 0.0) > SEND_LAG_WARNING_MS:
        rows.insert(1, ("WARNING", "the generator fell behind its schedule: the engine did not see the offered load"))
    if summary["simulated"]:  # said first: every figure below is the sim workers'
        rows.insert(0, ("SIMULATED", "figures from sim workers: run times a scaled profile, quality modelled"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def _tail(summary: dict[str, Any]) -> str:
    """Said when too few images came for a p99 to be a tail figure: printed bare, the largest of 26 latencies read
    as one that 1 request in 100 exceeds (the benches' tables said so already; loadgen/stats.py)."""
    images = summary["outcomes"]["ok"] + summary["outcomes"]["late"]  # the latencies the percentiles are over
    caveat = p99_caveat(images) if images else ""
    return f"  ({caveat})" if caveat else ""


def _sent(summary: dict[str, Any]) -> str:
    """How many were sent, over what span of sends the offered rate is (the drain is no part of it), and how long
    the run took in all. It said 'sent 4 over 2.9 s (offered 5.76/s)': 2.9 s was the run to its last answer, drain
    and all, and the rate was over the 0.52 s between the first send and the last."""
    sent, span, offered = summary["sent"], summary["send_span_s"], summary["offered_rps"]
    if offered is not None:
        sends = f"{sent} in {figure(span)} s from first to last send (offered {figure(offered)}/s)"
    elif sent > 1:
        sends = f"{sent} at one instant (no rate offered)"
    else:
        sends = f"{sent} (no rate offered)"
    stopped_s = summary["stopped_s"]
    if not sent and stopped_s is None:
        return sends
    codes = summary["error_codes"]
    # the run ends at its last answer, unless some were still unanswered at the drain's end or when you stopped it, or
    # it was stopped with none in flight (before its first send, or after its last answer)
    until = (
        "the end of its drain"
        if CLIENT_TIMEOUT in codes
        else "when it was stopped"
        if INTERRUPTED in codes or stopped_s == summary["duration_s"]
        else "its last answer"
    )
    return f"{sends}; run {figure(summary['duration_s'])} s to {until}"
