"""`argus serve`'s and `argus worker`'s log written by a thread of its own, so that a standard error that takes
nothing for a while (a terminal paused with Ctrl-S, a pipe whose reader is stopped or slow, a log shipper pushing
back, journald throttling) holds up no request: the writes were the event loop's, and the first one the pipe could
not take stopped /health and every request until the reader came back (a worker started again meanwhile, writing to
the engine's stderr, waited on its first line and never served).

Each record is formatted where it is logged (its time, arguments and traceback as they were then, in the text or the
JSON format alike) and queued; the queue is bounded, so a standard error stalled for good costs a bounded amount of
memory: a record it has no room for is dropped and counted, and one line says how many, in its place in the order,
once the writing has caught up with those before them. Stopped (the command ending, by any path, or
logging.shutdown at exit and in engine/quick_exit.py), it writes all it holds first, and any record after is written
at once, on the thread that logs it, as every other command's are."""

from __future__ import annotations

import logging
import queue
import threading
from logging.handlers import QueueHandler, QueueListener
from typing import TextIO

# lines held while standard error takes nothing: a burst's worth (start-up, a fleet's restarts), 0.75 MB of one-line
# records (measured, JSON)
QUEUED_LINES = 1000


class LogThread(QueueHandler):
    """A root handler whose records a thread writes to `stream`, at most `size` of them waiting."""

    def __init__(self, formatter: logging.Formatter, stream: TextIO, size: int = QUEUED_LINES) -> None:
        # the records come formatted: the writer writes each as it is (Python's default format, the message alone)
        self._writer = logging.StreamHandler(stream)
        super().__init__(queue.Queue(size))
        self.setFormatter(formatter)
        self._dropped = 0
        self._drops_lock = threading.Lock()  # the threads that log, and the writer's, count and tell drops
        self._listener: _WritingThread | None = _WritingThread(self.queue, self._writer, self)
        self._listener.start()

    def enqueue(self, record: logging.LogRecord) -> None:
        if self._listener is None:  # stopped (the handler's lock is held here, as in stop)
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
        """Writes all that is queued and ends the thread: a record logged after is written at once."""
        with self.lock:  # no record is queued meanwhile: those waiting are written after all before them
            if self._listener is None:
                return
            self._listener.stop()
            self._listener = None
            if self._dropped:  # dropped after the last record queued: the writer met no empty queue since
                self._writer.handle(self._dropped_line())
                self._dropped = 0

    def close(self) -> None:
        self.stop()  # logging.shutdown's, at exit or in engine/quick_exit.py
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


class _WritingThread(QueueListener):
    def __init__(self, records: queue.Queue, writer: logging.Handler, handler: LogThread) -> None:
        super().__init__(records, writer)
        self._handler = handler

    def dequeue(self, block: bool) -> logging.LogRecord:
        if self.queue.empty():
            self._handler.queue_dropped_line()
        return super().dequeue(block)

    def enqueue_sentinel(self) -> None:
        self.queue.put(self._sentinel)  # waits for room, as the records before it are written


def stop_log_thread() -> None:
    """Writes out the log of a process whose records a LogThread writes, and has it write from then on at once:
    before a command's last line or a traceback, which are printed straight to stderr."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LogThread):
            handler.stop()
