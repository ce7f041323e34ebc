"""SIGTERM and SIGINT for `argus serve` while no event loop handles them: kept, and acted on once the engine can.

The engine's loop handles both from the start of Engine.run, through the prompt embedder's load (seconds for a
neural one, on a thread of its own: engine/cache/embedder_loading.py). Before that, `argus serve` imports the command
line and the engine, checks its configuration and builds the engine (binds its sockets, makes its temporary folder);
after the loop closes, the process still has to exit. Python's defaults ended it wherever the signal landed: SIGTERM
killed it (exit 143) and left its temporary folder behind, SIGINT raised KeyboardInterrupt there, with a traceback.
Held here instead, a stop asked for before the loop runs is made once it does, before anything is served
(Engine.run); one that comes after the loop closes changes nothing, the engine has stopped.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class HeldStopSignals:
    """Holds SIGTERM and SIGINT from its creation until release()."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None  # the first stop signal held
        self._found = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        self.hold()

    def hold(self) -> None:
        """Holds them from now on (again, once the loop that handled them is done with them)."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._keep)

    def release(self, deliver: bool) -> None:
        """Puts back the handlers found; `deliver`: a signal held meanwhile is raised again, as if it came now (for
        a command that handles it as Python does)."""
        for signum, handler in self._found.items():
            signal.signal(signum, handler)
        if deliver and self.received is not None:
            signal.raise_signal(self.received)

    def _keep(self, signum: int, _frame: object) -> None:
        # only flips a state: the engine, or what starts it, acts on it
        if self.received is None:
            self.received = signal.Signals(signum)
