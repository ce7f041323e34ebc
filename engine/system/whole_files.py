"""Output files written whole or not at all: beside their place, then moved into it.

A profile, a predictor, a benchmark's JSON, a run's records or its plot written
in place and cut short (a full disk, Ctrl-C, a value that cannot be encoded
half-way through) left half a file where the last good one was, which the
next reader took for spoiled, or worse, for whole.

Each writer has a file beside of its own: two runs writing one place at once (two `argus profile latency --out
same.json`) shared one `.NAME.partial`, and one moved the other's half-written file into place, or removed it from
under the other, which then ended in FileNotFoundError.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def written_whole(path: str | Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """A text (or `binary`) file to write `path` through: in its place once closed without an error, else removed,
    `path` left as it was; one it replaces keeps its permissions. A link is written through (its target replaced, the
    link kept); a stream (is_stream) is written as it is, there being nothing to put in its place."""
    mode = "wb" if binary else "w"
    if is_stream(path):
        with _opened_stream(path, mode) as f:
            yield f
        return
    target = Path(os.path.realpath(path))
    partial, file = _beside(target, binary)
    try:
        with file as f:
            with contextlib.suppress(FileNotFoundError):
                # the file it replaces keeps its permissions, before a byte is written: a records file of users'
                # prompts made private (0600) was replaced by one anyone could read
                os.chmod(f.fileno(), stat.S_IMODE(os.stat(target).st_mode))
            yield f
        os.replace(partial, target)
    except BaseException:  # KeyboardInterrupt too: what is left of the attempt is no one's
        partial.unlink(missing_ok=True)
        raise


def _opened_stream(path: str | Path, mode: str) -> IO[Any]:
    """A stream to write as it comes. This process's own output (`--out - > profile.json`) is written through its own
    open file, after what it printed before: opened anew, the file was truncated and written from its start, over what
    was printed, and the line printed after (`written to /dev/stdout`) landed inside the JSON, which no reader took."""
    own = output_of_this_process(path)
    if own is None:
        return open(path, mode)
    printed = sys.stdout if own == 1 else sys.stderr
    if printed is not None:
        printed.flush()  # what was printed before goes before it
    return open(os.dup(own), mode)


def _beside(target: Path, binary: bool) -> tuple[Path, IO[Any]]:
    """A new file beside `target` (`.NAME.RANDOM.partial`, hidden) that no other writer has, and its name. Made as
    `open` makes any file (the umask's permissions), not 0600 as tempfile's: a new profile, plot or summary is as
    readable as the files its user makes by hand."""
    while True:
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
        try:
            return partial, open(partial, "xb" if binary else "x")  # "x": made here, never one another writer has
        except FileExistsError:
            continue


def check_writable_whole(path: str | Path) -> None:
    """The OSError written_whole(path) would meet as it makes its file beside `path`, raised now: one is made and
    removed. os.access cannot tell: it lets root write anywhere, and /proc refused root's file at the end of the run."""
    partial, file = _beside(Path(os.path.realpath(path)), binary=True)
    file.close()
    partial.unlink()


def written_or_exit(command: str, what: str, path: str | Path, write: Callable[[], None]) -> None:
    """`write()`; a file it cannot write, though checked writable as the run began (the disk filled, the folder went,
    a directory in its place, a folder this user may not write in), ends `command` in one line naming `what` and
    `path`: it was a traceback."""
    try:
        write()
    except OSError as error:
        raise SystemExit(f"{command}: could not write the {what} to {path}: {error.strerror or error}") from None


def is_stream(path: str | Path) -> bool:
    """Whether `path` (after its links) is written only as it comes, never replaced at the end: a pipe, a terminal,
    or the file this process's output goes to (`--records - > out.jsonl`: replaced, it took the records and left the
    summary printed after them in the file it replaced)."""
    return os.path.exists(path) and (not os.path.isfile(path) or output_of_this_process(path) is not None)


def output_of_this_process(path: str | Path) -> int | None:
    """1 or 2 when `path` is what this process's standard output or error goes to (/dev/stdout, its target)."""
    try:
        target = os.stat(path)
    except OSError:
        return None
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            own = os.fstat(fd)
            if (own.st_dev, own.st_ino) == (target.st_dev, target.st_ino):
                return fd
    return None
