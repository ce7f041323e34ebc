"""What a worker's image brings back is refused unless it can be what its run passed through: checked in process,
case by case (test_worker_latents sends some of them through an engine)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.cache.returned_latents import latents_problem
from protocols.codec import Blob
from protocols.worker_messages import ItemDone

LEVELS = (5, 10, 15, 20, 25)
SHAPE = (4, 8, 8)


def problem(levels: list[int], latents: np.ndarray | None, run_level: int = 0, steps: int = 50) -> str | None:
    done = ItemDone("r1", Blob(b""), run_level, levels, latents, 1.0, steps)
    return latents_problem(done, run_level, steps, LEVELS, SHAPE)


def stacked(count: int, shape=SHAPE, dtype=np.float16) -> np.ndarray:
    return np.zeros((count, *shape), dtype)


def test_what_a_run_passed_through_is_kept():
    assert problem([5, 10, 15, 20, 25], stacked(5)) is None
    assert problem([15, 20, 25], stacked(3, dtype=np.float32), run_level=10) is None


@pytest.mark.parametrize(
    "levels, latents, run_level, steps",
    [
        ([5], None, 0, 50),  # named, not sent
        ([10, 5], stacked(2), 0, 50),  # out of order
        ([5, 5], stacked(2), 0, 50),  # twice
        ([10, 15], stacked(2), 10, 50),  # a run from step 10 never passes through it
        ([20, 25], stacked(2), 0, 25),  # nor through its last step
        ([5, 12], stacked(2), 0, 50),  # not a cache level
        ([5, 10], stacked(2, shape=(4, 4, 4)), 0, 50),
        ([5, 10], stacked(3), 0, 50),  # three latents for two levels
        ([5, 10], stacked(2, dtype=np.uint8), 0, 50),
        ([5, 10], np.full((2, *SHAPE), np.nan, np.float16), 0, 50),
    ],
    ids=["missing", "unsorted", "repeated", "at-the-run-level", "at-the-last-step", "unknown-level", "shape",
         "count", "dtype", "nan"],
)  # fmt: skip
def test_what_no_run_passed_through_is_refused(levels, latents, run_level, steps):
    assert problem(levels, latents, run_level, steps)
