"""The queue `argus serve`'s log waits in for its writing thread (engine/logs/thread.py): bounded, what it has no room
for dropped and counted, the count said once in its place in the order, and all it holds written when it stops, at
any of a process's exits."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from engine.logs.thread import LogThread


class _Gate:
    """A standard error that takes a line only when let: `entered` counts the writes begun, `let` those allowed."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.let = threading.Semaphore(0)
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.entered.release()
        assert self.let.acquire(timeout=30)
        self.lines.append(text.rstrip("\n"))

    def flush(self) -> None:
        pass

    def begun(self) -> None:
        assert self.entered.acquire(timeout=30)


@pytest.fixture
def logged():
    gate = _Gate()
    handler = LogThread(logging.Formatter("%(levelname)s %(name)s: %(message)s"), gate, size=3)
    logger = logging.Logger("argus.test")
    logger.addHandler(handler)
    yield gate, handler, logger.info
    for _ in range(100):  # what is left, whatever the test did
        gate.let.release()
    handler.close()


def test_lines_past_the_bound_are_dropped_and_the_count_said_once_the_queue_is_written(logged):
    gate, handler, log = logged
    log("0")
    gate.begun()  # the writer holds 0: the queue takes 3 more
    for n in range(1, 6):
        log(str(n))  # returns at once: 4 and 5 are dropped
    for _ in range(4):
        gate.let.release()
    for _ in range(4):
        gate.begun()  # 0 to 3 written, and the writer is on a 5th line: the count, with nothing else to write
    assert gate.lines == ["INFO argus.test: 0", "INFO argus.test: 1", "INFO argus.test: 2", "INFO argus.test: 3"]
    log("6")
    for _ in range(2):
        gate.let.release()
    handler.stop()
    assert gate.lines[4:] == [
        "WARNING argus.log: 2 log lines dropped: standard error took none for a while",
        "INFO argus.test: 6",
    ]


def test_the_count_goes_before_the_first_line_queued_after_the_drops(logged):
    gate, handler, log = logged
    for n in range(6):
        log(str(n))
        if n == 0:
            gate.begun()  # 1 to 3 queued, 4 and 5 dropped
    gate.let.release()
    gate.let.release()
    gate.begun()
    gate.begun()  # 0 and 1 written, 2 being written: room for 2
    log("6")
    for _ in range(5):
        gate.let.release()
    handler.stop()
    assert [line.rpartition(": ")[2] for line in gate.lines] == [
        "0",
        "1",
        "2",
        "3",
        "standard error took none for a while",
        "6",
    ]
    assert gate.lines[4].startswith("WARNING argus.log: 2 log lines dropped")


def test_a_stop_writes_all_held_and_the_count_of_those_dropped_last(logged):
    gate, handler, log = logged
    for n in range(6):
        log(str(n))
        if n == 0:
            gate.begun()
    for _ in range(10):
        gate.let.release()
    handler.stop()
    assert [line.rpartition(" ")[2] for line in gate.lines[:4]] == ["0", "1", "2", "3"]
    assert gate.lines[4:] == ["WARNING argus.log: 2 log lines dropped: standard error took none for a while"]
    log("after")  # written at once, on this thread
    assert gate.lines[-1] == "INFO argus.test: after"


_EXITS = textwrap.dedent(
    """
    import logging, sys, time
    from engine.logs.setup import configure_logging
    from engine.system.quick_exit import exit_at_once

    configure_logging("INFO", sys.argv[2], threaded=True)
    log = logging.getLogger("argus.test")
    for n in range(200):
        log.info("line %d", n)
    try:
        raise ValueError("as it happened")
    except ValueError:
        log.exception("failed")
    if sys.argv[1] == "quick":
        exit_at_once(3)
    sys.exit(4)
    """
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("exit_by", "code"), [("quick", 3), ("sys.exit", 4)])
def test_every_line_is_written_at_exit_in_either_format(exit_by, code):
    for log_format in ("text", "json"):
        ran = subprocess.run(
            [sys.executable, "-c", _EXITS, exit_by, log_format], capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == code, ran.stderr[-2000:]
        if log_format == "json":
            records = [json.loads(line) for line in ran.stderr.splitlines()]
            assert [r["message"] for r in records] == [f"line {n}" for n in range(200)] + ["failed"]
            assert "ValueError: as it happened" in records[-1]["exc_info"]
        else:
            lines = ran.stderr.splitlines()
            assert [line.rpartition(": ")[2] for line in lines[:200]] == [f"line {n}" for n in range(200)]
            assert " ERROR argus.test[" in lines[200] and lines[200].endswith("]: failed")
            assert lines[-1] == "ValueError: as it happened"


def test_a_stop_gives_up_on_a_standard_error_that_takes_nothing_and_drops_what_comes_after():
    gate = _Gate()
    handler = LogThread(logging.Formatter("%(message)s"), gate, size=3, stall_s=0.1)
    logger = logging.Logger("argus.test")
    logger.addHandler(handler)
    logger.info("taken by the writer, never written")
    gate.begun()
    logger.info("queued")
    handler.stop()  # waited for the writer for ever
    assert handler.stalled
    logger.info("after")  # written at once, it waited on the writer's stalled standard error for ever
    for _ in range(10):
        gate.let.release()
    handler.close()
    assert "after" not in gate.lines


_STALLED_EXIT = textwrap.dedent(
    """
    import logging, sys
    from engine.logs.setup import configure_logging
    from engine.logs.thread import stop_log_thread

    configure_logging("INFO", "text", threaded=True)
    log = logging.getLogger("argus.test")
    for n in range(5000):
        log.info("line %d %s", n, "x" * 100)
    stop_log_thread()
    log.info("after the stop")
    print("stopped", flush=True)
    sys.exit(5)
    """
)


@pytest.mark.timeout(120)
def test_a_process_whose_standard_error_is_not_read_still_exits():
    """Before, its stop waited for the writer to write all it held, and logging.shutdown at exit for the writer's
    lock, both for ever: an engine told to stop (SIGTERM) while nobody read its standard error never exited."""
    reader, writer = os.pipe()
    fcntl.fcntl(writer, fcntl.F_SETPIPE_SZ, 4096)
    try:
        process = subprocess.Popen([sys.executable, "-c", _STALLED_EXIT], stdout=subprocess.PIPE, stderr=writer)
        os.close(writer)
        try:
            out, _ = process.communicate(timeout=60)
        finally:
            process.kill()
    finally:
        os.close(reader)
    assert (process.returncode, out) == (5, b"stopped\n")


@pytest.mark.timeout(60)
def test_a_stop_waits_on_one_long_line_a_slow_reader_is_taking():
    """A line is written in pieces, and standard error is stalled only once it takes no piece for STALL_S: a line
    that took longer (a long traceback, a reader that is slow, not stopped) was judged a stall, what was held after
    it given up and every record after the stop dropped."""
    reader, writer = os.pipe()
    fcntl.fcntl(writer, fcntl.F_SETPIPE_SZ, 4096)
    read: list[bytes] = []

    def read_slowly() -> None:  # a piece at a time, a while apart: the whole line takes some 6 times stall_s
        while piece := os.read(reader, 4096):
            read.append(piece)
            threading.Event().wait(0.02)

    slow = threading.Thread(target=read_slowly)
    slow.start()
    stream = os.fdopen(writer, "w")
    handler = LogThread(logging.Formatter("%(message)s"), stream, stall_s=0.5)
    logger = logging.Logger("argus.test")
    logger.addHandler(handler)
    line = "x" * 600_000
    logger.info(line)
    logger.info("held")
    handler.stop()
    assert not handler.stalled
    logger.info("after")
    handler.close()
    stream.close()
    slow.join(30)
    assert b"".join(read).decode().splitlines() == [line, "held", "after"]


class _SharedFile(io.TextIOWrapper):
    """A log file another process writes to as well (the engine's standard error, its local workers'): a line of its
    lands after each write of this stream's that is flushed, as it would whenever it could."""

    def __init__(self, path: os.PathLike) -> None:
        super().__init__(open(path, "ab"), encoding="utf-8")
        self._other = os.open(path, os.O_WRONLY | os.O_APPEND)

    def flush(self) -> None:
        super().flush()
        os.write(self._other, b"worker\n")

    def close(self) -> None:
        super().close()
        os.close(self._other)


def test_a_long_line_to_a_file_is_one_write_no_other_writer_lands_within(tmp_path):
    """To a file, a line goes whole, in one write. Written in pieces (as to a pipe, for a stop to see it progress), a
    long line (a JSON record with its traceback) had the lines another process wrote meanwhile land inside it."""
    path = tmp_path / "engine.log"
    line = "x" * 10_000
    with _SharedFile(path) as stream:
        handler = LogThread(logging.Formatter("%(message)s"), stream)
        logger = logging.Logger("argus.test")
        logger.addHandler(handler)
        logger.info(line)
        handler.close()
    # the other writer's lines after it (one a flush, the stream's close's too), none within
    assert [text for text in path.read_text().splitlines() if text != "worker"] == [line]
