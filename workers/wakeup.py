"""What ends a worker's wait at once when it is told to stop: a descriptor waited on beside its sockets.

A stop flag alone is read when the wait ends: a worker no engine answered, stopped by Ctrl-C or SIGTERM, went on
waiting out its hello's retry (a second), and a fleet its next timer. A signal that lands in the wait makes the
wait's poll return EINTR, but pyzmq, and Python's selectors, run the handler and then wait again for what is left.

Nor is a handler that calls `wake()` enough alone: Python runs it on the main thread, at its next bytecode. A signal
that landed on another thread (kill(1) takes any that does not block it), or on the main thread just before its
poll, past its last bytecode (pyzmq lets go of the GIL there, and the thread that sent the signal may run first), had
its handler run only as the wait ended: the worker waited it out, for ever in a test whose wait was. So while a runner
serves, the signal itself writes to the descriptor (`on_signals`).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator


class Wakeup:
    """Readable once `wake()` was called (inside `on_signals`, once a signal landed too), until `clear()`. `wake()` is
    safe from a signal handler (Python runs it between two bytecodes of the main thread) and from another thread."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def fileno(self) -> int:
        return self._reader.fileno()

    def wake(self) -> None:
        try:
            self._writer.send(b"\0")
        except OSError:  # full: a wake-up waits to be read already; closed: nothing waits any more
            pass

    def clear(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except BlockingIOError:
            pass

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[None]:
        """Inside, each signal that Python handles wakes it as it lands, whatever thread it lands on and before its
        handler has run (signal.set_wakeup_fd): a wait that then clears it does not stop, and the handler runs before
        the next (the waiter runs Python in between). Only the main thread may set that, and only it runs handlers:
        on another (a runner served on a test's thread), this does nothing."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        kept = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(kept)

    def close(self) -> None:
        self._reader.close()
        self._writer.close()
