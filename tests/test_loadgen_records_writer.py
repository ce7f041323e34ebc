"""--records as requests end: the writing is a thread's, so a records file that stalls holds up no send."""

import contextlib
import json
import os
import threading

import pytest

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
