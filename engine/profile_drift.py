"""Whether the workers run as fast as the latency profile the engine plans with says.

The controller sizes the fleet and the dispatcher judges deadlines by the profile (bundled per backend, or
--latency-profile). Workers on another GPU, a shared host or a slower driver take longer than it says: the plan
counts on capacity that is not there, and jobs are sent that cannot make their deadlines. Each batch's run is
compared with the profile's prediction for it; a steady gap is shown in /metrics and said in a warning naming the
cure (`argus profile latency` on these workers), at most every _WARN_EVERY_S.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

log = logging.getLogger("argus.dispatcher")

# a batch the profile says takes less is judged by noise (a sim worker at time scale 0, the engine's own hops)
_SHORTEST_PREDICTED_S = 0.05
# each batch weighs this much in the running mean of log(observed / predicted): about the last 40 batches
_WEIGHT = 0.05
# batches seen before the mean is judged: a worker's first runs are slow (CUDA kernels chosen, caches cold)
_SETTLED_AFTER = 50
# a gap this large either way is said; within it, a profile measured elsewhere is close enough
_TOLERATED = 1.5
_WARN_EVERY_S = 600.0


class ProfileDrift:
    def __init__(
        self, profile_name: str, on_ratio: Callable[[float], None], clock: Callable[[], float] = time.monotonic
    ):
        """`on_ratio`: given the running ratio of observed to predicted batch time after each batch judged."""
        self._profile_name = profile_name
        self._on_ratio = on_ratio
        self._clock = clock
        self._mean_log = 0.0
        self._batches = 0
        self._warned_at: float | None = None

    @property
    def ratio(self) -> float:
        return math.exp(self._mean_log)

    def batch_ran(self, predicted_s: float, observed_s: float) -> None:
        if predicted_s < _SHORTEST_PREDICTED_S or observed_s <= 0:
            return
        gap = math.log(observed_s / predicted_s)
        # the first batches set the mean outright rather than pull it from 1 (the mean of no batch)
        weight = max(_WEIGHT, 1.0 / (self._batches + 1))
        self._mean_log += weight * (gap - self._mean_log)
        self._batches += 1
        self._on_ratio(self.ratio)
        if self._batches >= _SETTLED_AFTER and abs(self._mean_log) > math.log(_TOLERATED):
            self._warn()

    def _warn(self) -> None:
        now = self._clock()
        if self._warned_at is not None and now - self._warned_at < _WARN_EVERY_S:
            return
        self._warned_at = now
        if self._mean_log > 0:
            effect = "the controller plans for capacity they do not have, and jobs are sent that miss their deadlines"
        else:
            effect = "the controller plans for less than they serve, and degrades images it could have made exactly"
        log.warning(
            "workers take %.2fx the time the latency profile %s says (over their recent batches): %s. Measure them "
            "with `argus profile latency` and serve with --latency-profile FILE",
            self.ratio,
            self._profile_name,
            effect,
        )
