"""Giving back to the system the memory a large batch freed (Linux with glibc).

glibc keeps part of what a process frees in its heaps for later allocations: a worker held what a batch of large
images freed there until it exited, though nothing used it (a tiny worker's batch of 8 images of 256x256 left its RSS
47 to 107 MB higher).
`malloc_trim(0)` gives back the free pages of every arena. It walks the heaps (on this 2-core VM, 7 ms for 50 MB
freed in holes, 30 to 100 ms for 250 to 500 MB), so it runs only after a batch that grew the worker's RSS by
TRIM_AFTER_GROWTH_BYTES, once its answer is sent; a batch that grows nothing costs one read of /proc/self/statm.
Elsewhere (musl, macOS: no malloc_trim) nothing is trimmed.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from types import TracebackType

# what a batch must add to the RSS to be worth a trim: well above what a small batch leaves behind, well below what a
# batch of large images leaves (above)
TRIM_AFTER_GROWTH_BYTES = 32 << 20
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """This process's RSS (the second field of /proc/self/statm, in pages), or None where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, TypeError, AttributeError):  # TypeError: Windows loads no library by None
        return None


class HeapTrim:
    """`with trim:` around a batch's run and answer: trims after it once the RSS grew noticeably since the last trim
    (or the first batch). Counted batch by batch, batches that each left less behind were never trimmed however much
    they added up; counted from the last trim's RSS, memory the worker does hold for good raises the mark once."""

    def __init__(self, growth_bytes: int = TRIM_AFTER_GROWTH_BYTES) -> None:
        self._growth_bytes = growth_bytes
        self._trim = _malloc_trim()
        self._mark: int | None = None  # the RSS growth is counted from

    def __enter__(self) -> None:
        if self._trim is not None and self._mark is None:
            self._mark = resident_bytes()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._trim is None or self._mark is None:
            return
        after = resident_bytes()
        if after is None:
            return
        trimmed = after - self._mark >= self._growth_bytes
        if trimmed:
            self._trim(0)
            after = resident_bytes() or after
        self._mark = after if trimmed else min(self._mark, after)
