"""What ends a worker's wait at once when it is told to stop: a descriptor waited on beside its sockets.

A stop flag alone is read when the wait ends: a worker no engine answered, stopped by Ctrl-C or SIGTERM, went on
waiting out its hello's retry (a second), and a fleet its next timer. A signal that lands in the wait makes the
wait's poll return EINTR, but pyzmq, and Python's selectors, run the handler and then wait again for what is left.
"""

from __future__ import annotations

import socket


class Wakeup:
    """Readable once `wake()` was called, until `clear()`. `wake()` is safe from a signal handler (Python runs it
    between two bytecodes of the main thread) and from another thread."""

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

    def close(self) -> None:
        self._reader.close()
        self._writer.close()
