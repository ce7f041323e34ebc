"""`argus serve`'s and `argus worker`'s log written by a thread of its own, so that a standard error that takes
nothing for a while (a terminal paused with Ctrl-S, a pipe whose reader is stopped or slow, a log shipper pushing
back, journald throttling) holds up no request: the writes were the event loop's, and the first one the pipe could
not take stopped /health and every request until the reader came back (a worker started again meanwhile, writing to
the engine's stderr, waited on its first line and never served).

Each record is formatted where it is logged (its time, arguments and traceback as they were then, in the text or the
JSON format alike) and queued; the queue is bounded, so a standard error stalled for good costs a bounded amount of
memory: a record it has no room for is dropped and counted, and one line says how many, in its place in the order,
once the writing has caught up with those before them. Stopped (the command ending, by any path, or
logging.shutdown at exit and in engine/system/quick_exit.py), it writes all it holds first, and any record after is
written at once, on the thread that logs it, as every other command's are. Unless standard error took nothing for
STALL_S meanwhile: what it holds is then given up, and any record after is dropped, so that nothing waits on a standard
error stalled for good (a reader stopped, a pipe nobody reads): the stop waited for it, and an engine told to stop
(SIGTERM) never exited, nor did a worker."""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
from logging.handlers import QueueHandler, QueueListener
from typing import TextIO

# lines held while standard error takes nothing: a burst's worth (start-up, a fleet's restarts), 0.75 MB of one-line
# records (measured, JSON)
QUEUED_LINES = 1000
# how long a stop waits for standard error to take a piece of a line (a slow one is waited for as long as it takes them)
STALL_S = 5.0
# a line is written in pieces of this many characters, each one write, so that a stop sees a long line progress (but to
# a regular file, _LineWriter): a line of ASCII no longer than that is one write of at most 4,096 bytes, which a pipe
# takes without another writer's bytes among them (PIPE_BUF); other characters take more bytes, past that bound, as
# they did when a line was one write
PIECE_CHARS = 4096


class LogThread(QueueHandler):
    """A root handler whose records a thread writes to `stream`, at most `size` of them waiting."""

    def __init__(
        self, formatter: logging.Formatter, stream: TextIO, size: int = QUEUED_LINES, stall_s: float = STALL_S
    ) -> None:
        self._writer = _LineWriter(stream)
        super().__init__(queue.Queue(size))
        self.setFormatter(formatter)
        self._dropped = 0
        self._stall_s = stall_s
        self.stalled = False  # a stop found standard error taking nothing: records are dropped from then on
        self._drops_lock = threading.Lock()  # the threads that log, and the writer's, count and tell drops
        self._listener: _WritingThread | None = _WritingThread(self.queue, self._writer, self)
        self._listener.start()

    def enqueue(self, record: logging.LogRecord) -> None:
        if self._listener is None:  # stopped (the handler's lock is held here, as in stop)
            if not self.stalled:
                self._writer.handle(record)
            return
        with self._drops_lock:
            self._queue_dropped_line()
            if self._dropped or not self._put(record):  # behind a count not yet told, it is dropped too
                self._dropped += 1

    def queue_dropped_line(self) -> None:
        """The writing thread's, finding the queue empty: all queued is written, and the line about those dropped since
        (any) is due now, the engine logging nothing more maybe."""
        with self._drops_lock:
            self._queue_dropped_line()

    def _queue_dropped_line(self) -> None:
        """Queues the line that says how many records were dropped since the last one queued, if any and room."""
        if self._dropped and self._put(self._dropped_line()):
            self._dropped = 0

    def stop(self) -> None:
        """Writes all that is queued and ends the thread: a record logged after is written at once (dropped, if
        standard error took nothing for STALL_S meanwhile)."""
        with self.lock:  # no record is queued meanwhile: those waiting are written after all before them
            if self._listener is None:
                return
            self.stalled = not self._listener.stop_unless_stalled(self._stall_s)
            self._listener = None
            # dropped after the last record queued: the writer met no empty queue since
            if self._dropped and not self.stalled:
                self._writer.handle(self._dropped_line())
                self._dropped = 0

    def close(self) -> None:
        self.stop()  # logging.shutdown's, at exit or in engine/system/quick_exit.py
        super().close()

    def _put(self, record: logging.LogRecord) -> bool:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            return False
        return True

    def _dropped_line(self) -> logging.LogRecord:
        record = logging.LogRecord(
            "argus.log",
            logging.WARNING,
            __file__,
            0,
            "%d log lines dropped: standard error took none for a while",
            (self._dropped,),
            None,
        )
        return self.prepare(record)


class _LineWriter:
    """Writes each record as a line (they come formatted: the message alone). Not a logging.StreamHandler:
    logging.shutdown takes every handler's lock at exit, and a write standard error never took held the writer's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.pieces = 0  # written so far: what a stop watches (the writing thread's; read as it is, a plain int)
        # a regular file takes each line whole, in one write no other writer's lands within (the engine's local
        # workers write to its standard error too), and waits on no reader as a pipe does: in pieces, a line longer
        # than one (a JSON record with its traceback) had a worker's lines written into it, two records spoilt
        self._piece_chars = 0 if _regular_file(stream) else PIECE_CHARS

    def handle(self, record: logging.LogRecord) -> None:
        line = f"{record.getMessage()}\n"
        piece_chars = self._piece_chars or len(line)
        try:
            for start in range(0, len(line), piece_chars):
                self._stream.write(line[start : start + piece_chars])
                self._stream.flush()
                self.pieces += 1
        except (OSError, ValueError):
            pass  # a standard error that takes nothing (its reader gone, a full disk, closed) is told on no other


def _regular_file(stream: TextIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # no descriptor (a stream of Python's own), or closed
        return False


class _WritingThread(QueueListener):
    def __init__(self, records: queue.Queue, writer: _LineWriter, handler: LogThread) -> None:
        super().__init__(records, writer)
        self._handler = handler
        self._writer = writer

    def dequeue(self, block: bool) -> logging.LogRecord:
        if self.queue.empty():
            self._handler.queue_dropped_line()
        return super().dequeue(block)

    def stop_unless_stalled(self, stall_s: float) -> bool:
        """Writes what is queued and ends the thread, or gives up once no piece of a line was written for `stall_s`
        (the thread stays, waiting on standard error, and ends with the process): whether all was written. Judged by
        the lines taken, a line that took longer than `stall_s` was a stall."""
        while True:  # room for the end's mark, as the records before it are written
            written = self._writer.pieces
            try:
                self.queue.put(self._sentinel, timeout=stall_s)
                break
            except queue.Full:
                if self._writer.pieces == written:
                    return False
        while self._thread is not None and self._thread.is_alive():
            written = self._writer.pieces
            self._thread.join(stall_s)
            if self._thread.is_alive() and self._writer.pieces == written:
                return False
        self._thread = None
        return True


def stop_log_thread() -> None:
    """Writes out the log of a process whose records a LogThread writes, and has it write from then on at once:
    before a command's last line or a traceback, which are printed straight to stderr."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LogThread):
            handler.stop()


def standard_error_stalled() -> bool:
    """Whether a stop found standard error taking nothing: a line printed there would wait for ever."""
    return any(isinstance(handler, LogThread) and handler.stalled for handler in logging.getLogger().handlers)
