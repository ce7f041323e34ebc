"""--records as requests end: the writing is a thread's, so a records file that stalls holds up no send, and the run's
end gives up on one that takes nothing."""

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable

import pytest

from loadgen import report
from loadgen.arrivals import Arrival
from loadgen.clients import LoadClient, RequestOptions
from loadgen.records import Answer
from loadgen.report import records_as_they_come
from loadgen.run import run_load

N = 50


class _CountingClient(LoadClient):
    """Every request answered at once; counts those sent before `released` was set."""

    def __init__(self, released: threading.Event):
        super().__init__(RequestOptions())
        self.released = released
        self.sent_while_held = 0

    async def _exchange(self, prompt, seed, slo_ms) -> Answer:
        if not self.released.is_set():
            self.sent_while_held += 1
        return Answer("busy", code="busy", status=429)

    async def close(self) -> None:
        pass


def _full_fifo(path) -> int:
    """A FIFO whose pipe is already full of blank lines, so that a write to it waits for its reader; the reader's
    descriptor, which has read nothing yet."""
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO's writer cannot open it before a reader has
    filler = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    for chunk in (b"\n" * 4096, b"\n"):  # whole pages, then whatever room is left
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(filler, chunk)
    os.close(filler)
    os.set_blocking(reader, True)
    return reader


@pytest.mark.timeout(60)
async def test_a_records_file_that_does_not_take_writes_holds_up_no_send(tmp_path):
    """Each record was written on the event loop: a pipe whose reader held off (as a stalled disk does) stopped the
    loop at the first record, and the sends after it went out only once the reader read (1 of 50 sent before). Every
    request is now sent and answered while the pipe takes nothing, and every record reaches it once its reader
    reads."""
    path = tmp_path / "records.jsonl"
    reader = _full_fifo(path)
    released = threading.Event()
    read: list[bytes] = []

    def read_once_released() -> None:
        # the timeout is only for a writer on the loop, which would otherwise wait for this reader forever
        released.wait(timeout=10)
        released.set()
        with os.fdopen(reader, "rb") as f:
            read.append(f.read())  # to the end: the writer has closed the file

    reading = threading.Thread(target=read_once_released, daemon=True)
    reading.start()
    client = _CountingClient(released)
    failures = []
    schedule = [Arrival(0.005 * i) for i in range(N)]
    async with records_as_they_come(path, failures.append) as on_record:
        records, summary = await run_load(schedule, ["a red fox"], client, None, progress=False, on_record=on_record)
        sent_while_held = client.sent_while_held
        released.set()
    reading.join(timeout=30)
    assert sent_while_held == summary["sent"] == N and summary["outcomes"]["rejected"] == N
    written = [json.loads(line) for line in read[0].decode().splitlines() if line]  # past the filler's blank lines
    assert sorted(written, key=lambda r: r["id"]) == records and not failures


@pytest.mark.timeout(60)
async def test_a_fifo_whose_reader_reads_nothing_is_given_up_at_the_end(tmp_path, monkeypatch):
    """The end of the run waited for the writer for good: a FIFO whose reader stopped reading held the summary back
    until the process was killed. A writer that writes nothing for RECORDS_STALL_S is now given up, and said so."""
    monkeypatch.setattr(report, "RECORDS_STALL_S", 0.5)
    reader = os.fdopen(_full_fifo(tmp_path / "records.jsonl"), "rb")
    # a writer waited for, for good, gets a broken pipe instead: the test fails rather than hang
    reader_leaves = threading.Timer(30, reader.close)
    reader_leaves.start()
    try:
        _, summary, failures = await _run_recording_to(tmp_path / "records.jsonl")
    finally:
        reader_leaves.cancel()
        reader.close()  # the writer given up, still in its write, ends on the broken pipe, saying nothing more
    assert summary["sent"] == N
    assert [type(failure) for failure in failures] == [TimeoutError], failures


@pytest.mark.timeout(60)
async def test_a_fifo_no_one_reads_yet_holds_up_no_send_and_gets_every_record_once_read(tmp_path):
    """A FIFO's open waited for its reader before the run began: no reader, no run (and no word of why). The run
    now goes on, and the records wait for a reader."""
    path = tmp_path / "records.jsonl"
    os.mkfifo(path)
    read: list[str] = []
    run_over = threading.Event()
    opened_once_over: list[bool] = []

    def read_once_the_run_is_over() -> None:
        # the timeout is only for a run that waits for this reader, which would otherwise never begin
        opened_once_over.append(run_over.wait(timeout=30))
        with open(path) as f:
            read.append(f.read())

    reading = threading.Thread(target=read_once_the_run_is_over, daemon=True)
    reading.start()
    records, summary, failures = await _run_recording_to(path, run_over.set)
    reading.join(timeout=30)
    assert opened_once_over == [True] and summary["sent"] == N and not failures
    assert sorted((json.loads(line) for line in read[0].splitlines()), key=lambda r: r["id"]) == records


@pytest.mark.timeout(60)
async def test_a_fifo_whose_reader_reads_slowly_is_waited_for_to_its_last_record(tmp_path, monkeypatch):
    """The end gave up on a reader still reading, taken for one that stopped: only the writer's writes were watched,
    and a write to a full pipe goes through only once its reader has taken a whole page (4 KiB), more with the
    writer's buffer (8 KiB). A reader taking less than that in RECORDS_STALL_S (under 15 to 30 records at 10 s) lost
    the records left, and the run ended 1. The bytes it takes now count, however few."""
    monkeypatch.setattr(report, "RECORDS_STALL_S", 0.5)
    path = tmp_path / "records.jsonl"
    os.mkfifo(path)
    read: list[bytes] = []
    # opened before the writer, the pipe still empty as it is made a page (the writer soon waits on the reader): one
    # quicker than a reader opening beside it had put more than that in it, and the resize failed (EBUSY)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(fd, True)

    def read_slowly() -> None:
        with os.fdopen(fd, "rb", buffering=0) as f:
            # 6.4 KB/s: a page in 0.64 s, more than the 0.5 s the writer is given. Nothing read and no writer yet
            # reads as an end: it is waited for
            while (chunk := f.read(64)) or not read:
                if chunk:
                    read.append(chunk)
                time.sleep(0.01)

    reading = threading.Thread(target=read_slowly, daemon=True)
    reading.start()
    records, _, failures = await _run_recording_to(path)
    reading.join(timeout=30)
    assert not failures
    assert sorted((json.loads(line) for line in b"".join(read).splitlines()), key=lambda r: r["id"]) == records


async def _run_recording_to(path, run_over: Callable[[], None] = lambda: None) -> tuple[list, dict, list[Exception]]:
    """N requests, each rejected at once, their records written to `path` as they end; `run_over` is called once the
    run is over, before the writer is waited for. The records, the summary and the writer's failures."""
    failures = []
    schedule = [Arrival(0.001 * i) for i in range(N)]
    async with records_as_they_come(path, failures.append) as on_record:
        records, summary = await run_load(
            schedule, ["a red fox"], _CountingClient(threading.Event()), None, progress=False, on_record=on_record
        )
        run_over()
    return records, summary, failures
