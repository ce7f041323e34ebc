"""The wait before a worker slot is started again: doubling while its workers crash, reset once one has lasted.

A worker that dies before its hello cannot start; one that says hello and dies
at once (a CUDA fault, an OOM kill or a bad driver on its first batch) cannot
serve either. Before, the hello alone reset the wait, so such a worker was
started again about every second for ever, reloading its model and taking (and
losing) a batch each time. As supervisors do (systemd's StartLimit, Kubernetes'
CrashLoopBackOff), the wait is reset only once a worker has stayed up for a
stable period after its hello: the longest wait, max_s (30 s by default). A
worker that has served that long dies of something that may well not come back
(it is started again after the initial wait, as before), and one that dies
sooner every time is started at most once per max_s once the wait is at its
cap: the slot spends at least half its time waiting, not loading and failing.
Longer (Kubernetes waits 10 minutes) would also back off a worker that
served for minutes between rare faults.

A worker that ends before its hello saying it cannot serve as configured (a
model it cannot load, a scheduler its backend refuses, refused by the engine)
fails every start the same way, each one loading the model again (minutes,
for SD-XL): after GIVE_UP_AFTER such starts in a row the slot is given up on its
quick restarts, and started again only every given_up_retry_s (5 minutes by
default), as Kubernetes' CrashLoopBackOff retries a pod at its cap. Before, it
was left empty for good: its cause fixed outside the engine (a model folder put
back, a driver reloaded), it stayed empty until the engine's restart.
Exit 2 does not tell a cause that stays (a hello the engine refuses) from one
fixed on disk, and for a slot of the engine's own nearly every cause is on disk;
one that stays costs a start every 5 minutes. Once a worker of the slot says
hello, or ends otherwise, it is no longer given up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# starts in a row that end saying the worker cannot serve, before a hello, after which a slot is given up. More
# than one: an out-of-memory while the model loads may pass
GIVE_UP_AFTER = 3
# the wait between the starts of a slot given up (LaunchConfig.given_up_retry_s): Kubernetes' cap. Shorter reloads a
# model that cannot serve more often (minutes of a GPU and a disk, for SD-XL); longer leaves a slot whose cause was
# fixed empty for longer
GIVEN_UP_RETRY_S = 300.0


class RestartBackoff:
    """One slot's wait. Pure: the launchers tell it when a worker said hello and ask it, at an exit, how long to
    wait; the clock is passed in so a test needs no time to pass."""

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        clock: Callable[[], float] = time.monotonic,
        given_up_retry_s: float = GIVEN_UP_RETRY_S,
    ):
        self.initial_s = initial_s
        self._max_s = max_s
        self._given_up_retry_s = given_up_retry_s
        self._clock = clock
        self._next_s = initial_s
        self._joined_at: float | None = None  # when the slot's current worker first said hello
        self._cannot_serve = 0  # starts in a row that ended saying the worker cannot serve, before its hello

    def joined(self) -> None:
        """The slot's current worker said hello. Its first hello counts: one said again by the same worker (it heard
        nothing from the engine for its timeout, and rejoined) started the stable period over."""
        if self._joined_at is None:
            self._joined_at = self._clock()
        self._cannot_serve = 0  # it could serve: the slot is no longer given up

    @property
    def given_up(self) -> bool:
        """GIVE_UP_AFTER starts in a row, and every one since, ended before a hello saying the worker cannot serve as
        configured: the slot is started again only every given_up_retry_s."""
        return self._cannot_serve >= GIVE_UP_AFTER

    def gives_up(self, cannot_serve: bool) -> bool:
        """Counts how the slot's worker ended (asked before after_exit, which forgets its hello); True while the slot
        is given up (given_up)."""
        self._cannot_serve = self._cannot_serve + 1 if cannot_serve and self._joined_at is None else 0
        return self.given_up

    def after_exit(self) -> float:
        """The wait before the next start, now that the slot's worker ended (or could not be started)."""
        if self.given_up:
            return self._given_up_retry_s  # the quick restarts' doubling is left where it was, for a later crash
        if self._joined_at is not None and self._clock() - self._joined_at >= self._max_s:
            self._next_s = self.initial_s  # it served a stable period: its end says nothing of the next start
        self._joined_at = None
        wait, self._next_s = self._next_s, min(self._next_s * 2, self._max_s)
        return wait

    def said(self, wait_s: float) -> str:
        """What the launcher's restart line adds when the wait grew (a crash loop), or while the slot is given up,
        else nothing: no line of its own, the restart is logged already."""
        if self.given_up:
            return f" in {wait_s:g} s (given up: it still cannot serve as configured)"
        if wait_s <= self.initial_s:
            return ""
        return f" in {wait_s:g} s (it keeps ending within {self._max_s:g} s of its start or hello)"
