"""Standard input, output and error opened on /dev/null when the process started with them closed (`<&-`, `>&-`,
`2>&-`, a supervisor that closes them), as a daemon does before it opens anything else.

Left closed, the next file, socket or event loop the process opened took the lowest free descriptor, 0, 1 or 2, and
libuv (uvloop: `argus serve`, `argus loadgen`, the benches) aborts on closing any descriptor below 3 ("uv__close:
Assertion `fd > STDERR_FILENO' failed"): every local worker an engine started died of SIGABRT in its spawn, the
engine never served and aborted as it stopped (exit 134), and `argus loadgen` aborted at its first closed connection.
Its workers and MILP process inherited the stray descriptor as their own stderr besides."""

from __future__ import annotations

import io
import os
import select
import sys

_STREAMS = ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w"))


def open_closed_standard_streams() -> None:
    """Opens /dev/null on each of descriptors 0, 1 and 2 that is closed, and gives Python a stream on it (it set
    sys.stderr and the others to None for a descriptor closed at its start): written to, it takes what is said and
    drops it, as `2>/dev/null` would."""
    for fd, name, mode in _STREAMS:
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        # the lowest free descriptor, so this one: those below it are open by now. Inheritable, as a standard stream
        # is (os.open's are not): the MILP process, started without naming its streams, had it closed still
        os.set_inheritable(os.open(os.devnull, os.O_RDWR), True)
        if getattr(sys, name) is None:
            errors = "backslashreplace" if name == "stderr" else None  # as Python's own stderr
            setattr(sys, name, open(fd, mode, errors=errors, closefd=False))  # noqa: SIM115 (the process's own)


class StandardOutputFailed(OSError):
    """A write to standard output failed for another reason than its reader going away: a full disk, an I/O error."""


class _StandardOutput(io.FileIO):
    def write(self, data) -> int:
        try:
            return super().write(data)
        except BrokenPipeError:  # a reader gone (`| head`): a command's usual ending, handled as such
            raise
        except OSError as error:
            raise StandardOutputFailed(error.errno, error.strerror) from None


def name_standard_output_failures() -> None:
    """Standard output's write errors raised as StandardOutputFailed: `argus keys > /dev/full` ended in a traceback
    of the print it was in, where which stream failed is all there is to say. A file the command writes fails with
    its own OSError still."""
    stdout = sys.stdout
    stdout.flush()
    raw = _StandardOutput(stdout.fileno(), "w", closefd=False)
    unbuffered = isinstance(stdout.buffer, io.RawIOBase)  # PYTHONUNBUFFERED, python -u
    sys.stdout = io.TextIOWrapper(
        raw if unbuffered else io.BufferedWriter(raw),
        encoding=stdout.encoding,
        errors=stdout.errors,
        line_buffering=stdout.line_buffering,
        write_through=stdout.write_through,
    )


def standard_output_reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has gone (`| head`, having read what it wanted): such a pipe's
    writing end polls as in error."""
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def silence_standard_output() -> None:
    """Points standard output at /dev/null once a write to it failed: else Python's flush at exit fails again on what
    it still holds, with a second traceback (the Python docs' recipe, signal module, SIGPIPE)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
