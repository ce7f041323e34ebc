"""A stretch of a file the disk cannot read, as a bad sector makes it: reads of the cache's files (os.preadv, the one
call engine/cache/file_reads.py reads them with) that reach it fail with EIO, and one starting before it returns what
lies before it, as the kernel's do. The file is named by its inode: renamed (set aside) it keeps its bad sector, and
a save written anew under its name is whole."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SECTOR = 4096
# "DEVICE:INODE:START:END" in an engine's environment: tests/bad_sector_site/sitecustomize.py fails its reads there
ENV = "ARGUS_TEST_BAD_SECTOR"
SITE = Path(__file__).resolve().parent / "bad_sector_site"


@dataclass(frozen=True, slots=True)
class BadSector:
    device: int
    inode: int
    start: int
    end: int

    @classmethod
    def of(cls, path: Path, start: int, end: int) -> BadSector:
        stat = os.stat(path)
        return cls(stat.st_dev, stat.st_ino, start, end)

    def reads_left(self, fd: int, offset: int, length: int) -> int:
        """How many of `length` bytes from `offset` a read gets before the bad stretch; -1: it starts in it."""
        stat = os.fstat(fd)
        elsewhere = offset >= self.end or offset + length <= self.start
        if elsewhere or (stat.st_dev, stat.st_ino) != (self.device, self.inode):
            return length
        return -1 if offset >= self.start else self.start - offset


def failing_preadv(bad: BadSector, preadv: Callable = os.preadv) -> Callable:
    """os.preadv, but for reads that reach `bad`."""

    def bad_sector_preadv(fd: int, buffers, offset: int, *flags: int) -> int:
        views = [memoryview(buffer).cast("B") for buffer in buffers]
        left = bad.reads_left(fd, offset, sum(len(view) for view in views))
        if left < 0:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        short = []
        for view in views:
            short.append(view[:left])
            left -= len(short[-1])
        return preadv(fd, short, offset, *flags)

    return bad_sector_preadv


def engine_environment(bad: BadSector) -> dict[str, str]:
    """The environment of an engine (and its workers) whose reads of `bad`'s file fail there (sitecustomize)."""
    python_path = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH", "")) if p)
    return {ENV: f"{bad.device}:{bad.inode}:{bad.start}:{bad.end}", "PYTHONPATH": python_path}


def from_environment() -> None:
    """In a process started with engine_environment: its reads of the file fail from now on."""
    os.preadv = failing_preadv(BadSector(*(int(part) for part in os.environ[ENV].split(":"))))
