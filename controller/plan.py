"""A plan: what the controller decided for the next window, in a form the engine applies and `GET /plan` shows."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.demand_classes import DemandClass, order


@dataclass(frozen=True)
class Plan:
    policy: str
    # how many workers serve each level K'; sums to the workers alive when it was made
    workers_per_level: Mapping[int, int]
    # r[K][K']: the probability that a prompt whose best level is K is served at K'; every row sums to 1. A class may
    # be a Reach (controller/demand_classes.py): requests of K* that can resume at some levels alone
    redirect: Mapping[DemandClass, Mapping[int, float]]
    # the demand it was made for, images/s per class K (headroom included)
    demand_rps: Mapping[DemandClass, float]
    # images/s of the demand its workers serve, each arrival following its class's row (the rest: refused or late)
    served_rps: float
    # expected quality (percent of the exact image) over those images; NaN when none are
    expected_quality: float
    solve_ms: float
    created_at: float
    # "optimal", "feasible" (stopped at the time limit with a solution), "fallback" (the solver failed:
    # the current allocation with re-derived routes) or "fixed" (a policy with nothing to solve)
    status: str
    # new routes for the allocation of the plan before it (the route-planner LP, when demand moved within a window),
    # not a full plan: its status is the LP's, and says nothing of whether the allocation's solver found a plan
    rerouted: bool = False

    @property
    def workers(self) -> int:
        return sum(self.workers_per_level.values())

    @property
    def total_demand_rps(self) -> float:
        return sum(self.demand_rps.values())

    @property
    def unserved_share(self) -> float:
        """The share of the demand it cannot serve (0 with no demand)."""
        demand = self.total_demand_rps
        return max(0.0, 1.0 - self.served_rps / demand) if demand > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (string keys, no NaN) for `GET /plan`."""
        return {
            "policy": self.policy,
            "status": self.status,
            "rerouted": self.rerouted,
            "created_at": self.created_at,
            "solve_ms": self.solve_ms,
            "workers": self.workers,
            "workers_per_level": {str(k): n for k, n in sorted(self.workers_per_level.items())},
            "redirect": {str(k): {str(kp): p for kp, p in sorted(row.items())} for k, row in _by_class(self.redirect)},
            "demand_rps": {str(k): d for k, d in _by_class(self.demand_rps)},
            "total_demand_rps": self.total_demand_rps,
            "served_rps": self.served_rps,
            "unserved_share": self.unserved_share,
            "expected_quality": None if math.isnan(self.expected_quality) else self.expected_quality,
        }


def _by_class(by_class: Mapping[DemandClass, Any]) -> list[tuple[DemandClass, Any]]:
    return sorted(by_class.items(), key=lambda item: order(item[0]))
