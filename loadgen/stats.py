"""Figures over samples: the load generator's summary and the benchmarks' tables take them from here."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

# below this many samples a nearest-rank p99 is the largest of them: the tail is not resolved, and a report says so
P99_MIN_SAMPLES = 100


def percentile(values: Sequence[float], q: float, *, empty: float | None = math.nan) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values: an observed value, never an interpolation. `empty`
    is the figure of no values: NaN, as median's, where a bench goes on computing with it (a table prints it n/a, its
    JSON null); None where a summary says 'no figure'."""
    if not values:
        return empty
    ordered = sorted(values)
    return float(ordered[max(1, math.ceil(q / 100.0 * len(ordered))) - 1])


def median(values: Sequence[float]) -> float:
    """NaN for no values."""
    return float(statistics.median(values)) if values else math.nan


def p99_caveat(samples: int) -> str:
    """What a p99 over `samples` values is, when it is not a tail figure: "" from P99_MIN_SAMPLES on."""
    if samples >= P99_MIN_SAMPLES:
        return ""
    return "p99 of 1 sample is that sample" if samples == 1 else f"p99 of {samples} samples is their max"
