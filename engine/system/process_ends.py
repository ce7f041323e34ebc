"""A child process's end in words, for a log line or an error: Popen's returncode -9 is a signal, which an operator
looks for in the kernel's log (the out-of-memory killer's), where "exited with -9" read as an exit code."""

from __future__ import annotations

import signal


def how_it_ended(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    why = " (a kill -9, or the kernel's out-of-memory killer)" if -returncode == signal.SIGKILL else ""
    return f"was killed by {name}{why}"
