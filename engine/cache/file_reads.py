"""Reads of the cache's own files (the saved cache, spill files), each through os.preadv into the buffer that keeps
the bytes.

A disk that cannot read a sector (a bad sector, a device gone) fails the read that reaches it with OSError (EIO),
having returned what lay before it as a short read. np.fromfile, used before, took such a failure for the file's
end and handed back a short array: an error the disk reported passed for a file cut short. Here a failed read
raises the OSError, and only a file that really ends first raises FileEndsEarly, so callers can tell a part they
cannot read from a file that is not what its header says.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


class FileEndsEarly(ValueError):
    """The file ended before the bytes asked for: cut short, or shrunk while it was read."""


@contextlib.contextmanager
def opened(path: Path) -> Iterator[int]:
    """A descriptor to read `path` by offset, closed at the end."""
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def read_into(fd: int, buffer: np.ndarray | bytearray | memoryview, offset: int) -> None:
    """Fills `buffer` (contiguous) with the bytes of `fd` from `offset`; OSError if a read fails, FileEndsEarly if
    the file ends first."""
    view = memoryview(buffer).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if not got:
            raise FileEndsEarly(f"the file ends {len(view) - done} bytes short of what was to be read")
        done += got


def read_array(fd: int, dtype: np.dtype, shape: tuple[int, ...], offset: int) -> np.ndarray:
    """An array of `dtype` and `shape` read from `fd` at `offset`, as read_into."""
    array = np.empty(shape, dtype)
    read_into(fd, array.reshape(-1).view(np.uint8), offset)
    return array
