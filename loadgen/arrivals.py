"""Arrival processes and the transforms that turn one into a replay schedule.

A schedule is a list of `Arrival(offset_s, prompt_index)`, sorted by offset,
offsets in seconds from the start of the run. Everything here is a pure
function of its arguments (and the seed), so a schedule is reproducible.

Order of the transforms (see `shape`): rescale to a target mean rate (in the
schedule's own time), then compress time by `time_scale`, then cut at
`duration_s` (seconds of the run, after compression) and `max_requests`.

Two ways to rescale a rate (RESCALE_MODES). `thin` keeps the schedule's clock and
draws a seeded share of its arrivals (repeating arrivals to go above its own
rate): a burst lasts as long as it did where the trace was recorded, only
fewer or more requests arrive in it. `stretch` multiplies every offset instead,
which also stretches every burst: a one-second burst of a trace slowed eightfold
lasts eight seconds, long against an SLO of a few seconds.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Sequence
from typing import NamedTuple

# gaps are drawn in blocks of this many; any block size gives the same schedule
_BLOCK = 4096
# a schedule is held in memory: more arrivals than this is a mistyped rate, not a run
MAX_ARRIVALS = 10_000_000
# numpy draws a gamma gap of shape k below 1 from a uniform's power U^(1/k), which is 0 once it passes the smallest
# float, e^-744: a share e^(-744 k) of the gaps, k = 1/cv^2. Past MAX_CV more than half round to 0, and the schedule
# is bursts at one instant: --max-requests 5 at cv 1e6 sent all 5 at once, no rate offered, --rate unheeded
_LOG_SMALLEST = math.log(sys.float_info.min * sys.float_info.epsilon)
MAX_CV = math.sqrt(-_LOG_SMALLEST / math.log(2))


class Arrival(NamedTuple):
    offset_s: float
    prompt_index: int | None = None


Schedule = list[Arrival]


def poisson(rate: float, *, seed: int, duration_s: float | None = None, max_requests: int | None = None) -> Schedule:
    """Poisson arrivals: exponential gaps with mean 1/rate."""
    return gamma(rate, 1.0, seed=seed, duration_s=duration_s, max_requests=max_requests)


def gamma(
    rate: float, cv: float, *, seed: int, duration_s: float | None = None, max_requests: int | None = None
) -> Schedule:
    """Gamma-renewal arrivals: gaps with mean 1/rate and coefficient of variation `cv`.

    cv = 1 is Poisson; cv > 1 is burstier (shape 1/cv^2 < 1 puts many gaps near
    zero and a few very long ones), cv < 1 more regular.
    """
    if not rate > 0:
        raise ValueError(f"rate must be > 0, not {rate}")
    if not cv > 0:
        raise ValueError(f"cv must be > 0, not {cv}")
    import numpy as np  # here, not at the top: the command line imports this module to build its parser

    if duration_s is None and max_requests is None:
        raise ValueError("a synthetic arrival process needs duration_s or max_requests to end")
    expected = min(rate * (duration_s if duration_s is not None else math.inf), max_requests or math.inf)
    _check_size(expected)
    # shape 1/cv^2 and scale cv^2/rate: a cv or rate far from 1 takes one beyond the floats, to 0 or infinity
    shape, scale = (1.0 / (cv * cv) if cv * cv > 0 else math.inf), cv * cv / rate
    if not (0 < shape < math.inf and 0 < scale < math.inf):
        raise ValueError(f"no gamma gaps can be drawn for cv {cv:g} at rate {rate:g}/s: floats cannot hold them")
    if cv > MAX_CV:
        zero = math.exp(_LOG_SMALLEST * shape)
        raise ValueError(
            f"cv {cv:g} rounds more than half the gaps to 0 ({zero * 100:.3g}%): the arrivals would come in bursts at"
            f" one instant, not at {rate:g}/s; ask for a cv of at most {math.floor(MAX_CV)}"
        )
    rng = np.random.default_rng(seed)
    limit = math.inf if max_requests is None else max_requests
    horizon = math.inf if duration_s is None else duration_s
    offsets: list[float] = []
    now = 0.0
    while len(offsets) < limit:
        block = now + np.cumsum(rng.gamma(shape, scale, _BLOCK))
        offsets.extend(float(t) for t in block if t <= horizon)
        # a large cv bunches arrivals: the expected count checked above does not bound them, and with a cv that
        # rounded nearly every gap to 0 (1e6, before MAX_CV) the run drew until memory ran out (22 GB)
        if len(offsets) > MAX_ARRIVALS:
            raise ValueError(
                f"cv {cv:g} at rate {rate:g}/s draws more than {MAX_ARRIVALS:,} arrivals (bunched far past the rate's"
                " count): ask for a smaller cv"
            )
        if block[-1] > horizon:
            break
        now = float(block[-1])
    return [Arrival(t) for t in offsets[: None if max_requests is None else max_requests]]


def mean_rate(schedule: Sequence[Arrival]) -> float:
    """Arrivals per second between the first and the last arrival: (n - 1) / span."""
    if len(schedule) < 2:
        raise ValueError("a mean rate needs at least two arrivals")
    span = schedule[-1].offset_s - schedule[0].offset_s
    if span <= 0:
        raise ValueError("all arrivals are at the same instant: the mean rate is undefined")
    return (len(schedule) - 1) / span


# --load sizes a trace by its busiest stretch of this length, on the trace's own clock
LOAD_WINDOW_S = 60.0


def peak_to_mean(schedule: Sequence[Arrival], window_s: float = LOAD_WINDOW_S) -> float:
    """The rate of the busiest `window_s` stretch (any start) over the mean rate: 1 for a steady schedule.

    It is a property of the schedule's shape, kept by `rescale_to_rate` (and, in expectation, by
    `thin_to_rate`), so a rate for the busiest stretch becomes a mean rate by dividing by it. A
    schedule shorter than the window has no busiest stretch other than itself: 1.
    """
    offsets = [a.offset_s for a in schedule]
    span = offsets[-1] - offsets[0] if offsets else 0.0
    if span <= window_s:
        return 1.0
    busiest, first = 0, 0
    for last, end in enumerate(offsets):
        # an arrival is in its own window, even where end - window_s rounds to end (an offset past about 5.8e17 s):
        # the window ran past the last arrival there, an IndexError traceback
        while first < last and offsets[first] <= end - window_s:
            first += 1
        busiest = max(busiest, last - first + 1)
    return busiest / window_s / mean_rate(schedule)


def rescale_to_rate(schedule: Sequence[Arrival], rate: float) -> Schedule:
    """Stretch or squeeze every offset so the whole schedule's mean rate is `rate`; burstiness is kept."""
    if not rate > 0:
        raise ValueError(f"rate must be > 0, not {rate}")
    factor = mean_rate(schedule) / rate
    return [Arrival(a.offset_s * factor, a.prompt_index) for a in schedule]


def thin_to_rate(schedule: Sequence[Arrival], rate: float, *, seed: int) -> Schedule:
    """Keep each arrival with probability rate / mean rate, on the schedule's own clock.

    Above the schedule's own rate, each arrival is repeated floor(ratio) times, and once more with
    probability ratio - floor(ratio): every arrival instant of the original carries on average `ratio`
    arrivals, and a ratio just above 1 keeps the original whole (thinned copies would drop some of it).
    """
    if not rate > 0:
        raise ValueError(f"rate must be > 0, not {rate}")
    ratio = rate / mean_rate(schedule)
    _check_size(ratio * len(schedule))
    whole, extra = divmod(ratio, 1.0)
    rng = random.Random(seed)
    return [a for a in schedule for _ in range(int(whole) + (rng.random() < extra))]


def _check_size(arrivals: float) -> None:
    if not arrivals <= MAX_ARRIVALS:
        raise ValueError(f"that makes about {arrivals:.3g} arrivals, more than a schedule may hold ({MAX_ARRIVALS:,})")


def compress_time(schedule: Sequence[Arrival], time_scale: float) -> Schedule:
    """Multiply every offset by `time_scale`: 0.1 replays ten times faster."""
    if not time_scale > 0:
        raise ValueError(f"time_scale must be > 0, not {time_scale}")
    return [Arrival(a.offset_s * time_scale, a.prompt_index) for a in schedule]


def truncate(
    schedule: Sequence[Arrival], *, duration_s: float | None = None, max_requests: int | None = None
) -> Schedule:
    """The arrivals at or before `duration_s`, at most `max_requests` of them."""
    # an arrival at `duration_s` as written is in, whatever the rounding of the compression that put it there: 3 s x
    # --time-scale 0.1 is 0.30000000000000004 in floats, and --duration-s 0.3 cut the arrival that --duration-s 3 kept
    # on the trace's own clock (a third of such boundaries). Four units in the last place cover the rounding of the
    # scale, of the product and of the duration
    bound = math.inf if duration_s is None else duration_s + 4 * math.ulp(duration_s)
    kept = [a for a in schedule if a.offset_s <= bound]
    return kept if max_requests is None else kept[:max_requests]


RESCALE_MODES = ("thin", "stretch")


def shape(
    schedule: Sequence[Arrival],
    *,
    rate: float | None = None,
    rescale: str = "thin",
    seed: int = 0,
    time_scale: float = 1.0,
    duration_s: float | None = None,
    max_requests: int | None = None,
) -> Schedule:
    """Apply the transforms in their fixed order: rate (`rescale` mode; `seed` draws a thinning), then time
    compression, then the bounds."""
    if rescale not in RESCALE_MODES:
        raise ValueError(f"rescale must be one of {', '.join(RESCALE_MODES)}, not {rescale!r}")
    if rate is None:
        shaped = list(schedule)
    elif rescale == "thin":
        shaped = thin_to_rate(schedule, rate, seed=seed)
    else:
        shaped = rescale_to_rate(schedule, rate)
    if time_scale != 1.0:
        shaped = compress_time(shaped, time_scale)
    return truncate(shaped, duration_s=duration_s, max_requests=max_requests)
