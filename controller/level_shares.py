"""A request's cache levels as the levels the controller knows, by the share of its steps a resume takes.

The predictor, the quality model and the plan know levels K of the engine's default N steps (5 to 25 of 50). How much
of an image a resume takes from its neighbour goes with K / N, the noise left at the step it starts from, not with
K alone: 15 steps of a 20-step request are 75% of its run, where level 15 of 50 is 30%. So a request of other steps
is offered each step its neighbour's latents are cached at as the lowest level whose share covers it: at 25 steps,
step 5 (20%) as level 10, step 10 as level 20, step 15 (60%) not at all, beyond level 25's 50%; at 100 steps, step 10
(10%) as level 5. A resume then takes no more of its neighbour than the level it was judged at promises. At the
default N every level is its own step. A worker returns latents at the cache levels below its N that some level
covers (resumable_steps): no request could resume from the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple


class Choice(NamedTuple):
    """The controller's choice for one request."""

    k_star: int  # its predicted best level
    level: int  # K', the level it is served at (0: in full)
    start: int  # the step of its own run it resumes at: `level`'s share of its steps, `level` at the default ones


def covering_level(step: int, steps: int, default_steps: int, levels: Iterable[int]) -> int | None:
    """The lowest of `levels` (of `default_steps`) whose share is at least `step` of `steps`'s; None if none is."""
    return min((level for level in levels if level > 0 and level * steps >= step * default_steps), default=None)


@dataclass(frozen=True)
class LevelShares:
    starts: Mapping[int, int]  # level (of the default N) -> the step of the request's run it resumes at

    @classmethod
    def of(cls, cached: Iterable[int], steps: int, default_steps: int, levels: Iterable[int]) -> LevelShares:
        """`cached`: the steps the neighbour's latents are held at for runs of `steps` steps."""
        levels = tuple(levels)
        starts: dict[int, int] = {}
        for step in sorted(cached):
            level = covering_level(step, steps, default_steps, levels) if 0 < step < steps else None
            if level is not None:
                starts[level] = step  # ascending: of the steps one level covers, the latest saves the most
        return cls(starts)

    @property
    def levels(self) -> tuple[int, ...]:
        """The levels the request may be served at from its neighbour, ascending."""
        return tuple(sorted(self.starts))

    def start(self, level: int) -> int:
        """The step a request served at `level` resumes at (0: it runs in full)."""
        return self.starts.get(level, 0)


# what the cache thread asks for each request of other steps than the default: a few subsets of the levels at a few
# step counts
level_shares = lru_cache(maxsize=1024)(LevelShares.of)


def resumable_steps(steps: int, default_steps: int, levels: tuple[int, ...]) -> list[int]:
    """Of the cache levels, the steps of a `steps`-step run a later request of as many steps can resume from, those
    worth a latent: at 20 steps 5 and 10, not 15 (75% of the run, past level 25's 50%); at 100 steps 10, 20 and 25,
    not 5 or 15 (10 and 20 cover the same levels and save more)."""
    return sorted(level_shares(levels, steps, default_steps, levels).starts.values())
