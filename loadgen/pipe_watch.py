"""What the reader of a pipe or FIFO has yet to read, to tell a reader that reads, however slowly, from one that
stopped.

The writer's own writes cannot tell them apart: a write to a full pipe goes through only once its reader has taken a
whole page (4 KiB; the kernel frees no less), so a reader taking a record a second let a write through every 15 s or
so, and was taken for one that had stopped. The bytes left in the pipe (FIONREAD) drop with each read, however small.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import struct
import termios
import threading


class PipeWatch:
    """The unread bytes of the pipe a file writes to, read on its own descriptor (a dup): the writer's thread may close
    its file at any time, and a descriptor number it closed may be another file's by the next look."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._closed = False

    def follow(self, fd: int) -> None:
        """Watches the pipe `fd` writes to; nothing for another file (a regular file's writes always go through)."""
        with self._lock, contextlib.suppress(OSError):  # unwatched, the writes alone tell
            if not self._closed and self._fd is None and stat.S_ISFIFO(os.fstat(fd).st_mode):
                self._fd = os.dup(fd)

    def unread(self) -> int | None:
        """The bytes in the pipe its reader has yet to read; None when no pipe is watched."""
        with self._lock:
            if self._fd is None:
                return None
            try:
                return struct.unpack("i", fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0"))[0]
            except OSError:
                return None

    def close(self) -> None:
        """Stops watching, for good: a follow() after it watches nothing."""
        with self._lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
