"""How soon a client refused for room should try again: the Retry-After of a 429, the retry_after_ms of a ZeroMQ Busy.

Room in the queue (--max-queue) frees as requests are answered, whatever the answer: images made, errors,
deadline_exceeded, cancellations. The hint is the time the engine takes, at the pace it freed room over the last
WINDOW_S seconds, to free the images that must leave before the refused request fits (engine/dispatch/client_shares.py
counts them). Measured rather than read off the latency profile, which knows the workers' speed but none of the other
answers, nor a fleet short of workers. The pace is of the time the queue held images: idle, the engine frees nothing
because it is asked nothing, and a burst after an idle spell was told 30 s for one image (60 for two) by a fleet that
freed it in a quarter of a second. Nothing freed counts as one image freed over the time held (a second at least): a
fresh engine says a second, one that has held images and freed none for a while (no worker, a hung fleet) says
longer.

Whole seconds, as HTTP's Retry-After takes (the ZeroMQ hint is the same, in ms), from MIN_RETRY_AFTER_S to
MAX_RETRY_AFTER_S. Refusals come thickest under overload: one costs a few arithmetic operations here; the bookkeeping is
a count and a time held per second.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from protocols.limits import retry_after_s

WINDOW_S = 30


class QueuePace:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._since = clock()  # the time held is counted up to
        self._second = int(self._since)  # the second the last counts are of
        self._counts: deque[int] = deque([0], maxlen=WINDOW_S)  # images freed in each second of the window
        self._freed = 0  # their sum
        self._held_s: deque[float] = deque([0.0], maxlen=WINDOW_S)  # of each second, the time the queue held images
        self._held = 0.0  # their sum
        self._images = 0  # images admitted and not answered

    def admitted(self, images: int) -> None:
        """Counts the images of a request admitted."""
        self._roll()
        self._images += images

    def freed(self, images: int) -> None:
        """Counts the images of a request answered."""
        self._roll()
        self._counts[-1] += images
        self._freed += images
        self._images -= images

    def retry_s(self, images_ahead: int) -> int:
        """Seconds until `images_ahead` more images have been freed, at the window's pace."""
        self._roll()
        per_s = max(self._freed, 1) / max(1.0, self._held)
        return retry_after_s(images_ahead / per_s)

    def _roll(self) -> None:
        """Counts the time held since the last call (whether the queue held images has not changed since) into the
        seconds it fell in, and moves the window on to the current second."""
        now = self._clock()
        second = int(now)
        # seconds wholly before the window leave it below whatever they held: WINDOW_S at most are moved through
        self._second = max(self._second, second - WINDOW_S)
        self._since = max(self._since, self._second)
        while self._second < second:
            self._hold_until(self._second + 1)
            if len(self._counts) == WINDOW_S:
                self._freed -= self._counts[0]
                self._held -= self._held_s[0]
            self._counts.append(0)
            self._held_s.append(0.0)
            self._second += 1
        self._hold_until(now)

    def _hold_until(self, until: float) -> None:
        if self._images:
            self._held_s[-1] += until - self._since
            self._held += until - self._since
        self._since = until
