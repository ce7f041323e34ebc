"""SIGTERM and SIGINT for `argus serve` while no event loop handles them: kept, and acted on once the engine can.
SIGHUP too, which asks a serving engine to read its keys again (engine/housekeeping.py).

The engine's loop handles both from the start of Engine.run, through the prompt embedder's load (seconds for a
neural one, on a thread of its own: engine/cache/embedder_loading.py). Before that, `argus serve` imports the command
line and the engine, checks its configuration and builds the engine (binds its sockets, makes its temporary folder);
after the loop closes, the process still has to exit. Python's defaults ended it wherever the signal landed: SIGTERM
killed it (exit 143) and left its temporary folder behind, SIGINT raised KeyboardInterrupt there, with a traceback.
Held here instead, a stop asked for before the loop runs is made once it does, before anything is served
(Engine.run); one that comes after the loop closes changes nothing, the engine has stopped (they stay held until the
process exits, which takes up to 2 s more once torch is loaded). A SIGHUP's default ended
the process too (exit 129): a reload sent as the engine started (a key file rotated as a service is started and
reloaded) killed it; held, the keys are read again once it serves, as the file may have changed since they were read.
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger("argus.engine")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HELD_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP)
# signals other servers act on (nginx and gunicorn reopen their logs on SIGUSR1: a log rotation's `kill -USR1`) and
# argus does not. Left at Python's default, one ended a serving engine at once, without a drain, every request in
# flight lost: the serving engine says it and serves on. Not held before it serves, nor after: nothing is in flight
# then, and a worker (`argus worker`) stops on SIGUSR1 (workers/main.py)
UNUSED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def say_unused(signum: signal.Signals) -> None:
    log.warning(
        "%s: argus does not act on it, and serves on (SIGTERM or SIGINT drains and stops the engine, SIGHUP rereads"
        " its keys)",
        signum.name,
    )


class HeldStopSignals:
    """Holds SIGTERM, SIGINT and SIGHUP from its creation until release()."""

    def __init__(self) -> None:
        self._stops: list[signal.Signals] = []  # the stop signals held, in the order they came
        self.hung_up = False  # a SIGHUP was held
        self._found = {signum: signal.getsignal(signum) for signum in HELD_SIGNALS}
        self.hold()

    @property
    def received(self) -> signal.Signals | None:
        """The first stop signal held."""
        return self._stops[0] if self._stops else None

    def hold(self) -> None:
        """Holds them from now on (again, once the loop that handled them is done with them)."""
        for signum in HELD_SIGNALS:
            signal.signal(signum, self._keep)

    def release(self, deliver: bool) -> None:
        """Puts back the handlers found; `deliver`: a signal held meanwhile is raised again, as if it came now (for
        a command that handles it as Python does)."""
        for signum, handler in self._found.items():
            signal.signal(signum, handler)
        if not deliver:
            return
        # the first the process does not ignore: one ignored where it started stays so (a shell script's background
        # job ignores SIGINT). Raised first, it hid the rest: a Ctrl-C, then the script's SIGTERM to its job, and
        # `argus worker` went on to serve
        for signum in [*self._stops, *([signal.SIGHUP] if self.hung_up else [])]:
            if self._found[signum] != signal.SIG_IGN:
                signal.raise_signal(signum)
                return

    def _keep(self, signum: int, _frame: object) -> None:
        # only flips a state: the engine, or what starts it, acts on it
        if signum == signal.SIGHUP:
            self.hung_up = True
        elif signum not in self._stops:
            self._stops.append(signal.Signals(signum))
