"""Why a worker cannot serve as configured, told to the process that started it (an engine's local launcher, an
`argus profile`) over a pipe, rather than printed. An engine printed each local worker's error line at each of its
three starts (engine/fleet/restart_backoff.py), among its model load's progress bars, and then said only "its error is
above"; a profile ended in a traceback quoting the worker's log. Now the engine says it once, and a profile as its
own usage error.
"""

from __future__ import annotations

import os

# the write end of the pipe, in the worker's environment: set by the process that started it, which reads the reason
REASON_FD_ENV = "ARGUS_CANNOT_SERVE_FD"
# a reason is one line; a pipe takes this much without its reader
_MAX_REASON_BYTES = 4096


class ReasonPipe:
    """The starting process's end: start the worker with `environment` and `pass_fds=(fd,)`, then call `started()`;
    once it has exited, `reason()` is what it said, or None. `close()` if it never started."""

    def __init__(self) -> None:
        self._read, self.fd = os.pipe()
        os.set_blocking(self._read, False)
        self._open = [self._read, self.fd]
        self._said: str | None = None

    @property
    def environment(self) -> dict[str, str]:
        return {REASON_FD_ENV: str(self.fd)}

    def started(self) -> None:
        """The worker holds the write end now: ours closed, a read ends once the worker's is."""
        self._close(self.fd)

    def reason(self) -> str | None:
        """Read once, then the pipe is closed: asked again, the same answer, not a read of a closed descriptor whose
        number the process may have given to another file since."""
        if self._read in self._open:
            try:
                said = os.read(self._read, _MAX_REASON_BYTES)
            except BlockingIOError:  # nothing said, and the write end still open (a process the worker started)
                said = b""
            self._said = said.decode(errors="replace") or None
            self.close()
        return self._said

    def close(self) -> None:
        for fd in list(self._open):
            self._close(fd)

    def _close(self, fd: int) -> None:
        if fd in self._open:
            self._open.remove(fd)
            os.close(fd)


def tell_starter(reason: str) -> bool:
    """Hands `reason` to the process that started this worker, if it asked for it (False: say it yourself)."""
    fd = os.environ.get(REASON_FD_ENV)
    if fd is None:
        return False
    try:
        os.write(int(fd), reason.encode()[:_MAX_REASON_BYTES])
    except (OSError, ValueError):  # not a pipe of ours after all: said as usual
        return False
    return True
