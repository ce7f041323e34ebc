"""How soon a client refused for room should try again: the Retry-After of a 429, the retry_after_ms of a ZeroMQ Busy.

Room in the queue (--max-queue) frees as requests are answered, whatever the answer: images made, errors,
deadline_exceeded, cancellations. The hint is the time the engine takes, at the pace it freed room over the last
WINDOW_S seconds, to free the images that must leave before the refused request fits (engine/client_shares.py counts
them). Measured rather than read off the latency profile, which knows the workers' speed but none of the other
answers, nor a fleet short of workers. Nothing freed in the window counts as one image freed over it: a fresh engine
says a second, one that has freed nothing for a while (no worker, a hung fleet) says longer.

Whole seconds, as HTTP's Retry-After takes (the ZeroMQ hint is the same, in ms), from MIN_RETRY_AFTER_S to
MAX_RETRY_AFTER_S. Refusals come thickest under overload: one costs a few arithmetic operations here; the bookkeeping is
a count per second.
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
        self._started = clock()
        self._second = int(self._started)  # the second the last count is of
        self._counts: deque[int] = deque([0], maxlen=WINDOW_S)  # images freed in each second of the window
        self._freed = 0  # their sum

    def freed(self, images: int) -> None:
        """Counts the images of a request answered."""
        self._roll()
        self._counts[-1] += images
        self._freed += images

    def retry_s(self, images_ahead: int) -> int:
        """Seconds until `images_ahead` more images have been freed, at the window's pace."""
        self._roll()
        span = min(WINDOW_S, max(1.0, self._clock() - self._started))
        per_s = max(self._freed, 1) / span
        return retry_after_s(images_ahead / per_s)

    def _roll(self) -> None:
        second = int(self._clock())
        for _ in range(min(second - self._second, WINDOW_S)):
            if len(self._counts) == WINDOW_S:
                self._freed -= self._counts[0]
            self._counts.append(0)
        self._second = second
