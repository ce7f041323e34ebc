"""Whether the workers run as fast as the latency profile the engine plans with says, and the pace it plans at.

The controller sizes the fleet and the dispatcher judges deadlines by the profile (bundled per backend, or
--latency-profile). Workers on another GPU, a shared host or a slower driver take longer than it says: the plan
counts on capacity that is not there, and jobs are sent that cannot make their deadlines (a walkthrough on a
loaded 2-core host: tiny images took 2.8 s against the profile's 1.28, and 97% of requests ended
deadline_exceeded). Each batch's run is compared with the profile's prediction for it; the median ratio of the
last _RECENT batches is shown in /metrics (a median: a worker paused for seconds, or one batch slowed by another
process, moves it not at all). A steady gap beyond _TOLERATED either way sets the engine's `pace` to it: the
dispatcher's predictions and the controller's capacities are scaled by it, so a slow fleet is planned at faster
levels rather than sent work it cannot finish in time; back within _BACK_WITHIN, the profile stands again. The gap
is also said in a warning naming the cure (`argus profile latency` on these workers), at most every _WARN_EVERY_S.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Callable

from engine.logs.quiet_lines import QuietLines

log = logging.getLogger("argus.dispatcher")

# a batch the profile says takes less is judged by noise: a sim worker's at a small time scale, whose timer and
# scheduling lag on a loaded host (several ms) would be past _TOLERATED of it (it was 50 ms with a tolerance of 1.5x)
_SHORTEST_PREDICTED_S = 0.075
# the batches the ratio is the median of, and seen before it is judged: a worker's first runs are slow (CUDA kernels
# chosen, caches cold)
_RECENT = 50
# a gap this large either way is planned at and said; within it, a profile measured elsewhere is close enough. It was
# 1.5: sim workers 1.33x slower than the engine's profile (bench compare, the code trace at 1.3x load, 1,800 s of it)
# missed 13.2% of their SLOs at a quality of 99.3, paced 6.6% at 98.2
_TOLERATED = 1.15
# once paced, the profile stands again within this: a ratio about _TOLERATED would switch the pace at every batch
_BACK_WITHIN = 1.05
_WARN_EVERY_S = 600.0


class ProfileDrift:
    def __init__(
        self, profile_name: str, on_ratio: Callable[[float], None], clock: Callable[[], float] = time.monotonic
    ):
        """`on_ratio`: given the ratio of observed to predicted batch time after each batch judged."""
        self._profile_name = profile_name
        self._on_ratio = on_ratio
        self._recent: deque[float] = deque(maxlen=_RECENT)  # observed / predicted, of the last batches judged
        # their median, taken as each batch is judged: the pace is read for every job routed and judged
        self._ratio = 1.0
        self._pacing = False
        self._warnings = QuietLines(_WARN_EVERY_S, clock)

    @property
    def ratio(self) -> float:
        """The median of the recent batches' observed / predicted time (1 before any)."""
        return self._ratio

    @property
    def pace(self) -> float:
        """What the profile's times are multiplied by: the ratio while the gap is steady and large, else 1."""
        return self.ratio if self._pacing else 1.0

    def batch_ran(self, predicted_s: float, observed_s: float) -> None:
        # NaN, which a worker's message can carry, would pass the median through (a NaN sorts nowhere), and the pace;
        # infinity too, from a worker that says it every batch: a pace the controller cannot scale its profile by
        if predicted_s < _SHORTEST_PREDICTED_S or not 0 < observed_s < math.inf:
            return
        self._recent.append(observed_s / predicted_s)
        ratio = self._ratio = statistics.median(self._recent)
        self._on_ratio(ratio)
        if len(self._recent) < _RECENT:
            return
        if not 1 / _TOLERATED <= ratio <= _TOLERATED:
            self._pacing = True
            self._warn()
        elif 1 / _BACK_WITHIN < ratio < _BACK_WITHIN:
            self._pacing = False

    def _warn(self) -> None:
        if self._warnings.due("drift") is None:
            return
        log.warning(
            "workers take %.2fx the time the latency profile %s says (over their recent batches): the engine plans"
            " and judges deadlines at their pace until they are back within %gx of it. Measure them with `argus"
            " profile latency` and serve with --latency-profile FILE",
            self.ratio,
            self._profile_name,
            _BACK_WITHIN,
        )
