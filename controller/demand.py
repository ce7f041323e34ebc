"""The demand estimator: arrivals per window smoothed by an EWMA, with headroom, and the mix of predicted K*.

As Proteus does: the rate planned for is beta times the EWMA of the observed
rate (beta = 1.05, 5% headroom). The K* mix is that of the last window (a
window without arrivals keeps the mix before it). No clock inside: the caller
says when a window closes.

With `fast_attack` (argus), a rise is planned for at once: the rate planned for
is beta times the larger of the EWMA and the rate of the window so far, so a
burst moves the routes within the controller's first look at it, while a fall
still decays through the EWMA. A plain EWMA plans for half a burst's rate in
its first window and most of it only in the third, by when a burst of the
Azure code trace is over.

Demand is counted in images of the latency profile's N steps, the unit its
capacities are in: an image of another step count is weighed by `WorkPerImage`
(a 150-step image, where the profile's N is 50, is about 3 to 4 of them).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from controller.profiles import LatencyProfile, ProfileLatency


@dataclass(frozen=True)
class DemandEstimate:
    rps: float  # images/s to plan for (of the profile's N steps, see WorkPerImage), headroom included
    mix: dict[int, float]  # class K* -> share of arrivals; shares sum to 1

    def per_class(self) -> dict[int, float]:
        return {k: self.rps * share for k, share in self.mix.items()}


class WorkPerImage:
    """How many images of the profile's own N steps one image of `steps` steps at `level` costs a worker: the
    ratio of their batch-1 latencies (`ProfileLatency`, what the sim backend sleeps for), so that only the N - K
    steps run scale, not the fixed part. On `sdxl_a100` an image of 150 steps counts 2.8 at K = 0 and 4.2 at
    K = 25 (125 steps run where 25 are), one of 20 steps 0.47 at K = 0. Counted as one, a client asking for
    150 steps had the controller plan for a third of the work its workers did, and see capacity to spare."""

    def __init__(self, profile: LatencyProfile):
        self._profile = profile
        self._latency = ProfileLatency(profile)

    def __call__(self, level: int, steps: int) -> float:
        if steps == self._profile.steps:
            return 1.0
        return self._latency.seconds(level, steps, 1) / self._profile.latency(level, 1)


class DemandEstimator:
    def __init__(self, window_started: float, alpha: float = 0.5, headroom: float = 1.05, fast_attack: bool = False):
        self.window_started = window_started
        self.alpha = alpha  # EWMA weight of the newest window
        self.headroom = headroom
        self.fast_attack = fast_attack
        self._counts: Counter[int] = Counter()
        self._ewma_rps: float | None = None  # None until a window has been seen
        self._planned_rps = 0.0  # the rate the last window closed planned for (fast attack included)
        self._mix: dict[int, float] = {0: 1.0}

    def observe(self, k_star: int, images: float = 1.0) -> None:
        self._counts[k_star] += images

    def peek(self, now: float) -> DemandEstimate:
        """The estimate if the window closed now, without closing it."""
        _, planned, mix = self._next(now)
        return DemandEstimate(self.headroom * planned, mix)

    def last(self) -> DemandEstimate:
        """The estimate the last window closed gave, for a window too young to tell anything yet: with fast attack a
        burst's rate, which the plan in force was made for, not the EWMA (about half of it)."""
        return DemandEstimate(self.headroom * self._planned_rps, dict(self._mix))

    def close_window(self, now: float) -> DemandEstimate:
        self._ewma_rps, self._planned_rps, self._mix = self._next(now)
        self._counts = Counter()
        self.window_started = now
        return DemandEstimate(self.headroom * self._planned_rps, dict(self._mix))

    def _next(self, now: float) -> tuple[float | None, float, dict[int, float]]:
        """The EWMA, the rate to plan for and the mix after the window so far. A window of no length tells
        nothing, nor do the quiet ones before the first arrival: an engine's first look, as it starts, taken
        as a rate of 0 had the baselines plan for half the demand in the first window of load."""
        elapsed = now - self.window_started
        arrivals = sum(self._counts.values())
        if elapsed <= 0 or (self._ewma_rps is None and not arrivals):
            return self._ewma_rps, self._ewma_rps or 0.0, dict(self._mix)
        rate = arrivals / elapsed
        ewma = rate if self._ewma_rps is None else self.alpha * rate + (1.0 - self.alpha) * self._ewma_rps
        mix = {k: n / arrivals for k, n in sorted(self._counts.items())} if arrivals else dict(self._mix)
        return ewma, max(ewma, rate) if self.fast_attack else ewma, mix
