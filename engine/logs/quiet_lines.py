"""Log lines said at most once per key every interval, counting those left out: for what can happen as often as its
cause likes (a peer's handshake with a fresh key, a hello refused, each batch of workers off their profile), where a
line each would fill the log."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

# the keys kept: a peer may make up keys (a refusal names its worker id or model), which must not grow without bound
_KEYS_KEPT = 256


class QuietLines:
    def __init__(self, interval_s: float, clock: Callable[[], float] | None = None):
        self._interval_s = interval_s
        self._clock = clock or time.monotonic
        self._quiet_until: dict[str, float] = {}
        self._left_out: dict[str, int] = {}  # what the lines of a key left out since its last one said

    def due(self, key: str, count: int = 1) -> int | None:
        """None: leave this line of `key` out (`count`, what it tells of, is counted). Else say it, and the number
        returned: what the lines left out since the key's last line told of."""
        now = self._clock()
        if now < self._quiet_until.get(key, -math.inf):
            self._left_out[key] = self._left_out.get(key, 0) + count
            return None
        if len(self._quiet_until) >= _KEYS_KEPT and key not in self._quiet_until:
            self._quiet_until.clear()  # the quiet times and the counts of keys made up go; the next of each is said
            self._left_out.clear()
        self._quiet_until[key] = now + self._interval_s
        return self._left_out.pop(key, 0)
