"""A clock a test sets by hand (`clock.now = ...`), for what takes a `clock` callable in place of time.monotonic."""


class Clock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now
