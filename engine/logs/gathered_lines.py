"""Log lines that wait a short window to say, in one line, all that came within it: a fleet's thousand workers join
(or leave) within a second, and a line each made a thousand INFOs. What comes with no window open is said at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GatheredLines(Generic[T]):
    def __init__(self, window_s: float, say: Callable[[list[T]], None]):
        """`say`: says the items of a window (one or more), in the order they came."""
        self._window_s = window_s
        self._say = say
        self._items: list[T] = []
        self._window_end: asyncio.TimerHandle | None = None

    def gather(self) -> None:
        """Opens a window of `window_s`, unless one is open: what is added until its end is said then."""
        if self._window_end is None:
            self._window_end = asyncio.get_running_loop().call_later(self._window_s, self.say)

    def add(self, item: T) -> None:
        self._items.append(item)
        if self._window_end is None:
            self.say()

    def say(self) -> None:
        """Says what was gathered now, and closes the window: at its end, or as the engine stops (the loop will not
        run the window's end) or before a line that must come after these."""
        if self._window_end is not None:
            self._window_end.cancel()
            self._window_end = None
        items, self._items = self._items, []
        if items:
            self._say(items)
