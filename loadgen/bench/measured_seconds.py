"""The argparse type of a benchmark's measured span in seconds (a run's length, its unmeasured lead-in)."""

from __future__ import annotations

from engine.commands.arg_types import between

# the longest span a benchmark measures or leads in with: a bench runs for as long as it is told, and one of more than
# an hour is a mistyped number, not a measurement (the engine bench's --duration-s 1e300 ran until stopped, saying
# nothing; the scale bench slept its steps on the wall clock, where 1e11 s ended in an OverflowError traceback)
MAX_MEASURED_S = 3600.0


def measured_seconds(*, zero_allowed: bool):
    """An argparse type: seconds from 0 (or above it, when not `zero_allowed`) to MAX_MEASURED_S."""
    return between(
        float,
        0,
        MAX_MEASURED_S,
        " s",
        "an hour: a longer one is a mistyped number, not a measurement",
        least_allowed=zero_allowed,
    )
