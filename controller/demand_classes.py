"""The plan's classes: a request's predicted best level K*, and for a request that cannot resume at every level (one
of other steps than the default), the levels it can.

A request of other steps resumes only at the levels its neighbour's cached steps cover (controller/level_shares.py):
at 10 steps level 25 alone (step 5), at 30 steps levels 10, 20 and 25. Counted in its K*'s class, the plan routed it
to levels it cannot resume at, where it ran in full (a policy serves the highest of its levels at or below the pick,
else 0): for 10-step traffic of class 25, argus planned 45% of it at level 20, none of which ran there, and its
expected quality and capacity were those of images it did not serve. In a class of its own (`Reach`), the plan
routes it only where it can resume (or to 0), and a fixed policy's row for it says where its picks run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from controller.predictor import stored_level_at_most


class Reach(NamedTuple):
    """Requests of best level `k_star` that can resume at `levels` alone (some of the plan's, above 0)."""

    k_star: int
    levels: tuple[int, ...]

    def __str__(self) -> str:
        """Its key in `GET /plan`: "25@25" for 10-step requests of class 25, "20@10,20,25" for 30-step ones of 20."""
        return f"{self.k_star}@{','.join(map(str, self.levels))}"


DemandClass = int | Reach


def demand_class(k_star: int, usable: Iterable[int], levels: tuple[int, ...]) -> DemandClass:
    """The class of a request of best level `k_star` that can resume at `usable`, of the plan's `levels`: K* alone
    when it can resume at every one (and for class 0, which runs at 0)."""
    usable = tuple(sorted(set(usable) & set(levels[1:])))
    return k_star if not k_star or usable == levels[1:] else Reach(k_star, usable)


def best_level(k: DemandClass) -> int:
    """The class's K*."""
    return k.k_star if isinstance(k, Reach) else k


def order(k: DemandClass) -> tuple[int, tuple[int, ...]]:
    """Classes by K*, then those of fewer levels: ints and Reaches do not compare."""
    return (k.k_star, k.levels) if isinstance(k, Reach) else (k, ())


def runs_at(row: Mapping[int, float], k: DemandClass) -> dict[int, float]:
    """Where class k's images run when a policy picks `row` for them: a Reach's at the highest of its levels at or
    below the pick, else in full at 0 (as `stored_level_at_most` serves them)."""
    if not isinstance(k, Reach):
        return dict(row)
    ran: dict[int, float] = {}
    for level, share in row.items():
        at = stored_level_at_most(level, k.levels)
        ran[at] = ran.get(at, 0.0) + share
    return ran
