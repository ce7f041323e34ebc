"""`run_load`: replay one schedule open-loop against one engine and measure what comes back.

Open loop: each request is sent at its offset as its own task, whatever the
state of earlier ones, so a slow engine sees the load the schedule offers
rather than a load throttled by its own replies. The run has a hard end: the
last send plus `drain_s` (the last offset, unless the generator fell behind); a
request still unanswered then is cancelled (over ZeroMQ the engine is told) and
recorded as an error with code client_timeout.

A run can be cut short (`Interrupt`, Ctrl-C in `argus loadgen`): it sends
nothing more, and waits the drain for what is in flight, or, told again, not at
all: a request then unanswered has code interrupted, and is an error if it had
waited past its SLO, else cancelled. The records and summary then cover what
was sent; the summary says how many were planned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from tqdm import tqdm

from loadgen.arrivals import Arrival
from loadgen.cancelling import cancel_and_wait
from loadgen.clients import LoadClient, Planned
from loadgen.engine_status import LevelSampler
from loadgen.prompts import pair_prompts
from loadgen.records import INTERRUPTED, Answer, Record, make_record
from loadgen.report import summarize
from protocols.limits import MAX_SEED

log = logging.getLogger(__name__)


class Interrupt:
    """How far a run is cut short: `stop_sending` first, `stop_waiting` for the replies still due too."""

    def __init__(self) -> None:
        self.stop_sending = asyncio.Event()
        self.stop_waiting = asyncio.Event()

    def next_stage(self) -> None:
        """Ctrl-C: the first stops the sending, the next the waiting."""
        (self.stop_waiting if self.stop_sending.is_set() else self.stop_sending).set()

    def stop_now(self) -> None:
        self.stop_sending.set()
        self.stop_waiting.set()


async def run_load(
    schedule: Sequence[Arrival],
    prompts: Sequence[str],
    client: LoadClient,
    slo_ms: float | None,
    *,
    seed: int | None = None,
    drain_s: float = 60.0,
    status_url: str | None = None,
    api_key: str | None = None,
    sample_every_s: float = 1.0,
    progress: bool | None = True,
    interrupt: Interrupt | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> tuple[list[Record], dict[str, Any]]:
    """Send every arrival of `schedule` through `client`; return the records (by id) and their summary.

    seed: request i asks for image seed `seed + i` (None: the engine picks).
    status_url: the engine's HTTP base URL, polled every `sample_every_s` for
    workers per level (see loadgen.engine_status), with `api_key` if the
    engine wants one; None: no polling.
    progress: a progress bar on stderr; None: only when stderr is a terminal (a bar redrawn into a file or a pipe, a CI
    log, is a line of text at each redraw).
    interrupt: cuts the run short (see Interrupt); None: the run goes to its end.
    on_record: called with each record as its request ends, in the order they end, on the event loop: it must not
    block (a file write would delay the sends; loadgen.report.records_as_they_come hands each to a thread).
    The caller owns `client` and closes it.
    """
    if not drain_s > 0:
        raise ValueError(f"drain_s must be > 0, not {drain_s}")
    if slo_ms is not None and drain_s * 1000.0 < slo_ms:
        # a request unanswered at the hard end is counted a violation, which one still within its SLO is not yet
        raise ValueError(f"drain_s {drain_s:g} is shorter than the SLO, {slo_ms:g} ms")
    planned = [
        Planned(i, p, prompts[p], arrival.offset_s, None if seed is None else (seed + i) % (MAX_SEED + 1))
        for i, (arrival, p) in enumerate(zip(schedule, pair_prompts(schedule, prompts), strict=True))
    ]
    sampler = LevelSampler(status_url, sample_every_s, api_key) if status_url else None
    counts: Counter[str] = Counter()
    records: list[Record] = []
    # the requests not recorded yet: one leaves as its record is made, so that a long run holds its records alone,
    # not every task it ever started (which held as much again: 1.35 KB a request, of which 0.58 KB the record)
    in_flight: dict[asyncio.Task[Record], tuple[Planned, float]] = {}
    last_answer = 0.0
    disable = None if progress is None else not progress  # tqdm's None: off unless on a terminal
    bar = tqdm(total=len(planned), unit="req", desc="answered", disable=disable, dynamic_ncols=True)

    # perf_counter, not the loop's clock: uvloop's ticks in whole milliseconds
    start = time.perf_counter()
    # when the sending ended: at the last send, or when the run was stopped before it
    sending_ended = start

    def add(record: Record) -> None:
        records.append(record)
        counts[record["outcome"]] += 1
        if on_record is not None:
            on_record(record)
        bar.set_postfix(counts, refresh=False)
        bar.update(1)

    def answered(task: asyncio.Task[Record]) -> None:
        nonlocal last_answer
        # a cancelled one is recorded by the timeout path below, which also records one it found done before this
        # callback ran
        if task.cancelled() or task not in in_flight:
            return
        planned_request, sent_at = in_flight.pop(task)
        error = task.exception()
        if error is None:
            record = task.result()
        else:
            # a bug, not a transport failure (those are answers); still counted, once, and shown
            log.error("request %d failed in the client", planned_request.id, exc_info=error)
            answer = Answer("error", code=f"exception:{type(error).__name__}")
            record = make_record(
                planned_request.id,
                planned_request.prompt_index,
                planned_request.scheduled_at,
                sent_at,
                (time.perf_counter() - start - sent_at) * 1000.0,
                answer,
                slo_ms,
            )
        add(record)
        last_answer = time.perf_counter()

    async def send_all() -> None:
        nonlocal sending_ended
        try:
            for request in planned:
                # until the offset, however many sleeps that takes: uvloop's timers tick in whole milliseconds, and one
                # sleep sent a third of a run's requests up to 1.3 ms before their offsets
                while (delay := start + request.scheduled_at - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)  # the one await: an interrupt cancels the sending here, between sends
                task = asyncio.create_task(client.request(request, start, slo_ms))
                in_flight[task] = (request, time.perf_counter() - start)
                task.add_done_callback(answered)
        finally:
            sending_ended = time.perf_counter()

    interrupt = interrupt or Interrupt()
    sampler_task = asyncio.create_task(sampler.run(start)) if sampler else None
    try:
        await _until_done_or_stopped(send_all(), interrupt.stop_sending)
        # from the last send, which is the last offset unless the generator fell behind: a request it sent late
        # still gets the whole drain, rather than being cancelled as it goes out and counted as client_timeout
        hard_end = time.perf_counter() + drain_s
        if in_flight:
            await _until_done_or_stopped(_done_or_until(list(in_flight), hard_end), interrupt.stop_waiting)
        pending = {task for task in in_flight if not task.done()}
        # to the last answer, or to the stop of a run stopped with nothing in flight: one stopped 30 s in, before a
        # trace's first arrival, ran for 0.0 s (its last answer, of none, was its start)
        end = time.perf_counter() if pending else max(last_answer, sending_ended)
        given_up = interrupt.stop_waiting.is_set()
        await cancel_and_wait(pending)
        for task, (request, sent_at) in list(in_flight.items()):
            if task.cancelled():
                waited_ms = (end - start - sent_at) * 1000.0
                answer = _interrupted(waited_ms, slo_ms) if given_up else None
                add(make_record(request.id, request.prompt_index, request.scheduled_at, sent_at, None, answer, slo_ms))
            else:
                # one that ended in the loop turn of the hard end (or while being cancelled) is done, but its
                # done callback may not have run yet: record it now, once
                answered(task)
    finally:
        # only when the run itself is cancelled or fails is anything still in flight here
        await cancel_and_wait(task for task in in_flight if not task.done())
        if sampler_task is not None:
            sampler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler_task
        bar.close()
    records.sort(key=lambda r: r["id"])
    summary = summarize(
        records,
        slo_ms=slo_ms,
        duration_s=end - start,
        stopped_s=sending_ended - start if len(records) < len(planned) else None,
        worker_levels=sampler.samples if sampler else (),
        worker_levels_source=sampler.source if sampler else None,
        planned=len(planned),
    )
    return records, summary


def _interrupted(waited_ms: float, slo_ms: float | None) -> Answer:
    """A request the user stopped waiting for: a violation only if it had waited past its SLO already, else its
    fate is unknown, as a request the engine cancelled is, and it is not counted against the SLO."""
    late = slo_ms is not None and waited_ms > slo_ms
    return Answer("error" if late else "cancelled", code=INTERRUPTED)


async def _done_or_until(tasks: list[asyncio.Task[Record]], deadline: float) -> None:
    """Until every task is done or time.perf_counter() reaches `deadline`, however many waits that takes: uvloop's
    timers tick in whole milliseconds, and one wait ended up to 0.4 ms early, a request cancelled as client_timeout (a
    violation) before its SLO had passed at a --drain-s equal to it."""
    pending = set(tasks)
    while pending and (left := deadline - time.perf_counter()) > 0:
        _, pending = await asyncio.wait(pending, timeout=left)


async def _until_done_or_stopped(work: Coroutine[Any, Any, Any], stop: asyncio.Event) -> None:
    """Runs `work` until it ends or `stop` is set, whichever comes first (then `work` is cancelled)."""
    working = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({working, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (working, stopped):
            waiter.cancel()
        done = await asyncio.gather(working, stopped, return_exceptions=True)
    if isinstance(done[0], Exception):  # a bug in the work, not its cancellation: shown, as it was when awaited
        raise done[0]
