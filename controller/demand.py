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
Azure code trace is over. The window's own rate counts only when its arrivals
exceed what the EWMA predicts for the time so far by more than Poisson noise
explains (BURST_SIGNIFICANCE standard deviations). Counted on any count, a
short window read noise as bursts (3 arrivals in the 0.2 s a 1 s window is
first looked at read as 15/s): under a steady 20 images/s on 80 workers, a 1 s
window moved 757 workers a minute, 385 with a plain EWMA and now 415 (at 2
images/s on 8, 203, 157 and 166; a 10 s window 9.5, 5.3 and 5.8), and planned
for 3.0 images/s of a steady 2 (now 2.5, the plain EWMA's 2.4).

Demand is counted in images of the default 50 steps, the unit its capacities
are in: an image of another step count is weighed by `WorkPerImage` (a 150-step
image is about 3 to 4 of them).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from controller.demand_classes import DemandClass, order
from controller.profiles import LatencyProfile
from workers.limits import DEFAULT_STEPS

# with fast attack, a window's own rate counts when its arrivals exceed the EWMA's prediction by this many standard
# deviations of a Poisson count: a steady load passes it at about 1% of the looks (the EWMA is noisy too), a burst
# of 12 arrivals where the EWMA expects 4 (over 4 + 3 * 2) at once
BURST_SIGNIFICANCE = 3.0


@dataclass(frozen=True)
class DemandEstimate:
    rps: float  # images/s to plan for (of the default steps, see WorkPerImage), headroom included
    mix: dict[DemandClass, float]  # class (K*, or a Reach of it) -> share of arrivals; shares sum to 1
    # of class 0's arrivals, the share that came with a neighbour's latent (too far for any level by the table); the
    # rest are misses, which only run in full whatever level a policy picks
    far_share: float = 0.0

    def per_class(self) -> dict[DemandClass, float]:
        return {k: self.rps * share for k, share in self.mix.items()}


class WorkPerImage:
    """How many images of the default steps one image of `steps` steps at `level` costs a worker: the ratio of their
    batch-1 latencies at that level (`ProfileLatency`, what the sim backend sleeps for), so that only the steps run
    scale, not the fixed part. On `sdxl_a100` an image of 150 steps counts 2.8 at K = 0 and 4.2 at K = 25 (125 steps
    run where 25 are), one of 20 steps 0.47 at K = 0. Counted as one, a client asking for 150 steps had the controller
    plan for a third of the work its workers did, and see capacity to spare. Of the default steps, not the profile's
    N: a unit that weighs an image alike at every level, as the plan moves classes between levels. In images of a
    profile of 30 steps, a 50-step image weighed 1.5 at level 0 and 2.7 at level 25, and a class moved from one to
    the other took the wrong share of the capacity there."""

    def __init__(self, profile: LatencyProfile):
        self._latency = profile.at_any_steps

    def __call__(self, level: int, steps: int, start: int | None = None) -> float:
        """`start`: the step of its run an image served at `level` resumes at (None: `level`): its own steps run,
        against level `level`'s capacity, which the plan puts it through."""
        start = level if start is None else start
        if steps == DEFAULT_STEPS and start == level:
            return 1.0
        return self._latency.seconds(start, steps, 1) / self._latency.seconds(level, DEFAULT_STEPS, 1)


class DemandEstimator:
    def __init__(self, window_started: float, alpha: float = 0.5, headroom: float = 1.05, fast_attack: bool = False):
        self.window_started = window_started
        self.alpha = alpha  # EWMA weight of the newest window
        self.headroom = headroom
        self.fast_attack = fast_attack
        self._counts: Counter[DemandClass] = Counter()
        self._squares = 0.0  # the sum of the squared sizes of the window's arrivals, for its noise
        self._ewma_rps: float | None = None  # None until a window has been seen
        self._planned_rps = 0.0  # the rate the last window closed planned for (fast attack included)
        self._mix: dict[DemandClass, float] = {0: 1.0}
        self._far = 0.0  # the window's class-0 arrivals with a neighbour's latent
        self._far_share = 0.0

    def observe(self, k_star: DemandClass, images: float = 1.0, neighbour: bool = False, misses: float = 0.0) -> None:
        """One arrival (a request) of `images` of class `k_star` and `misses` more of class 0 (a latent starts one
        image: a request's others run in full), in images of the default steps; `neighbour`: it came with a
        neighbour's latent it could resume from. One arrival to the burst test whatever its classes: counted as two,
        a request of 2 images was taken for half as noisy as it is."""
        self._counts[k_star] += images
        if misses:
            self._counts[0] += misses
        self._squares += (images + misses) ** 2
        if neighbour and k_star == 0:
            self._far += images

    def peek(self, now: float) -> DemandEstimate:
        """The estimate if the window closed now, without closing it."""
        _, planned, mix = self._next(now)
        return DemandEstimate(self.headroom * planned, mix, self._next_far_share())

    def last(self) -> DemandEstimate:
        """The estimate the last window closed gave, for a window too young to tell anything yet: with fast attack a
        burst's rate, which the plan in force was made for, not the EWMA (about half of it)."""
        return DemandEstimate(self.headroom * self._planned_rps, dict(self._mix), self._far_share)

    def close_window(self, now: float) -> DemandEstimate:
        self._ewma_rps, self._planned_rps, self._mix = self._next(now)
        self._far_share = self._next_far_share()
        self._counts = Counter()
        self._squares = 0.0
        self._far = 0.0
        self.window_started = now
        return DemandEstimate(self.headroom * self._planned_rps, dict(self._mix), self._far_share)

    def _next_far_share(self) -> float:
        """The window's share of far neighbours in class 0 so far; a window without class 0 keeps the last one, as
        the mix does."""
        misses_and_far = self._counts[0]
        return self._far / misses_and_far if misses_and_far > 0 else self._far_share

    def _next(self, now: float) -> tuple[float | None, float, dict[DemandClass, float]]:
        """The EWMA, the rate to plan for and the mix after the window so far. A window of no length tells
        nothing, nor do the quiet ones before the first arrival: an engine's first look, as it starts, taken
        as a rate of 0 had the baselines plan for half the demand in the first window of load."""
        elapsed = now - self.window_started
        arrivals = sum(self._counts.values())
        if elapsed <= 0 or (self._ewma_rps is None and not arrivals):
            return self._ewma_rps, self._ewma_rps or 0.0, dict(self._mix)
        rate = arrivals / elapsed
        ewma = rate if self._ewma_rps is None else self.alpha * rate + (1.0 - self.alpha) * self._ewma_rps
        mix = (
            {k: n / arrivals for k, n in sorted(self._counts.items(), key=lambda item: order(item[0]))}
            if arrivals
            else dict(self._mix)
        )
        return ewma, max(ewma, rate) if self.fast_attack and self._is_burst(arrivals, elapsed) else ewma, mix

    def _is_burst(self, arrivals: float, elapsed: float) -> bool:
        """Whether the window's arrivals so far are more than the EWMA before it explains, beyond Poisson noise."""
        if self._ewma_rps is None:
            return True  # the first window: its rate is the EWMA anyway
        expected = self._ewma_rps * elapsed
        # requests are Poisson, each of its images' work, so the count's variance is the expected work times the
        # mean size of an arrival weighed by size (1 for lone images of N steps): 4 images at once are noisier
        spread = math.sqrt(expected * self._squares / arrivals) if arrivals else 0.0
        return arrivals - expected > BURST_SIGNIFICANCE * spread
