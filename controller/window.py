"""The controller's per-window logic, with the clock injected: when to solve what.

- Every `window_s` (10 s, as Proteus re-solves): close the demand window and
  make a full plan (the MILP for argus and proteus).
- At once when the number of workers alive changes, and at the next look
  after a full plan that failed: a full plan on the demand of the window so
  far (once it has run `min_observe_s`; before, the last closed window's),
  and the window goes on.
- In between, for argus alone (`Policy.reroutes_between_windows`), once a window has run `min_observe_s`: if the
  demand seen so far has moved more than `shift_threshold` from what the plan was made for, re-derive the routes for
  the workers where they are (the route-planner LP).
- After a full plan failed (the solver's process died or stalled), `follow_fleet`: if the workers alive changed since
  the plan in force, a plan without the solver for them, where they are; the full plan stays owed.

The engine calls `observe_arrival` for every admitted request (its images, the
level it runs at and its steps: demand is counted in images of the default
50 steps, see controller/demand.py) and
`maybe_replan` every second or so, in a worker thread (a MILP takes
milliseconds to seconds); one lock keeps the two apart.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace

from controller.demand import DemandEstimate, DemandEstimator, WorkPerImage
from controller.demand_classes import DemandClass
from controller.plan import Plan
from controller.policies import Policy, Rerouting, Solving, WindowInputs

# the shortest window `argus serve --window-s` takes: the engine's control loop looks at the window at most this often
# (engine/control/loop.py), so a shorter one was re-planned every 10 ms all the same, on demand counted over those
# 10 ms (0 or 1 arrivals: estimates that swung between 0 and 70 img/s under a steady 20), each plan moving
# workers between levels. A compressed clock (a sim worker at --time-scale 0.01) compresses the window with it: 0.1 s
# stands for 10 s
MIN_WINDOW_S = 0.01


@dataclass(frozen=True)
class ControllerConfig:
    slo_s: float = 15.0  # the SLO capacities are computed for (SD-XL's in DiffServe)
    window_s: float = 10.0
    # re-route when the per-class demand moved by more than this share of the planned total
    shift_threshold: float = 0.25
    # no re-route on a window younger than this, nor sooner than this after the last solve
    min_observe_s: float = 2.0
    ewma_alpha: float = 0.5
    headroom: float = 1.05

    def __post_init__(self) -> None:
        # a window of 0 would re-plan without pause on demand measured over a few milliseconds
        for name in ("slo_s", "window_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, not {value}")


class Controller:
    def __init__(self, policy: Policy, config: ControllerConfig, now: float):
        self.policy = policy
        self.config = config
        self._demand = DemandEstimator(now, config.ewma_alpha, config.headroom, policy.plans_for_bursts)
        self._work = WorkPerImage(policy.profile)
        self._profiled = policy.profile  # the one a pace scales
        self._lock = threading.Lock()
        self._plan: Plan | None = None
        self._last_solve_at = now
        # a full plan is owed at the next look: the pace changed, or the one a window or a pace asked for failed
        self._full_plan_owed = False

    @property
    def plan(self) -> Plan | None:
        """The plan in force (None before the first `maybe_replan`)."""
        return self._plan

    def observe_arrival(
        self,
        k_star: DemandClass,  # its K*, or a Reach of it for a request that cannot resume at every level
        images: int = 1,
        level: int = 0,
        steps: int | None = None,
        start: int | None = None,
        neighbour: bool = False,
        misses: int = 0,
    ) -> None:
        """One request: `images` of class `k_star`, served at `level` for `steps` steps (None: the default 50),
        resuming at step `start` of them (None: `level`; controller/level_shares.py), and `misses` more run in full.
        `neighbour`: it came with a neighbour's latent (of class 0, a far neighbour, not a miss)."""
        work = images if steps is None else images * self._work(level, steps, start)
        in_full = misses if steps is None else misses * self._work(0, steps, 0)
        with self._lock:
            self._demand.observe(k_star, work, neighbour, in_full)

    def plan_at_pace(self, pace: float) -> None:
        """Capacities from the profile's times multiplied by `pace` from now on (the workers' own pace,
        engine/fleet/profile_drift.py), in a full plan at the next `maybe_replan`: the plan in force counts on capacity
        its workers do not have (or leaves theirs unused)."""
        with self._lock:
            self.policy.profile = self._profiled if pace == 1.0 else self._profiled.scaled(pace)
            self._full_plan_owed = True

    def maybe_replan(self, now: float, workers_alive: int, where: Mapping[int, int] | None = None) -> Plan | None:
        """A new plan if one is due (full or re-routed), else None. Call it from one thread at a time. `where`: how
        many of the workers alive are at each level now (None: where the plan in force put them). A plan moves as few
        of them as it can from there: measured from the plan before, a worker lost at one level had the plan take
        one off another level and move a third into the gap, and a newcomer moved off the level it joined at."""
        config = self.config
        with self._lock:
            plan = self._plan
            window_age = now - self._demand.window_started
            window_due = plan is None or window_age >= config.window_s
            owed = self._full_plan_owed
            full = window_due or workers_alive != plan.workers or owed
            self._full_plan_owed = False
            if window_due:
                estimate = self._demand.close_window(now)
            elif full:
                # a worker came or went, their pace changed, or the last full plan failed: re-allocate now, on the
                # demand of a window that goes on. Closed early, a window of a fraction of a second weighed in the
                # EWMA as much as a whole one
                estimate = self._demand_so_far(now)
            elif (
                self.policy.reroutes_between_windows
                and window_age >= config.min_observe_s
                and now - self._last_solve_at >= config.min_observe_s
            ):
                estimate = self._demand.peek(now)
                if demand_shift(estimate.per_class(), plan.demand_rps) <= config.shift_threshold:
                    return None
            else:
                return None
            self._last_solve_at = now
        planned = dict(plan.workers_per_level) if plan is not None else {}
        # a full plan moves workers from where they are; new routes are for the plan's allocation, which the engine
        # staffs (a worker that joined at another level is moved there)
        current = dict(where) if full and where is not None else planned
        inputs = self._inputs(now, workers_alive, current, estimate)
        try:
            new = self.policy.plan(inputs) if full else self._rerouted(inputs, planned)
        except Exception:
            if window_due or owed:
                # still due at the next look: dropped, the allocation for a window that had just closed (or a plan
                # at a new pace) waited for the next window, the workers where the plan before had put them for a
                # whole window more (a worker change is retried anyway: it differs from the plan in force's)
                with self._lock:
                    self._full_plan_owed = True
            raise
        self._plan = new
        return new

    def follow_fleet(self, now: float, workers_alive: int, where: Mapping[int, int]) -> Plan | None:
        """After a full plan failed (the solver's process died or stalled: engine/control/milp_process.py), a plan
        without the solver for the workers alive, where they are (`where`), when the plan in force was made for
        another number of them; else None, as for a policy that solves nothing. Kept, the plan in force routed to
        levels whose workers had gone, for as long as the solver failed. The full plan stays owed, at the next look."""
        if not isinstance(self.policy, Solving):
            return None
        with self._lock:
            if self._plan is not None and self._plan.workers == workers_alive:
                return None
            self._full_plan_owed = True
            estimate = self._demand_so_far(now)
        self._plan = self.policy.plan_without_solver(self._inputs(now, workers_alive, dict(where), estimate))
        return self._plan

    def _inputs(self, now: float, workers: int, where: dict[int, int], estimate: DemandEstimate) -> WindowInputs:
        """What a policy plans from: the workers alive, where they are, and the demand estimated."""
        return WindowInputs(now, workers, where, estimate.rps, estimate.mix, self.config.slo_s, estimate.far_share)

    def _demand_so_far(self, now: float) -> DemandEstimate:
        """The demand of the window so far, once it has run `min_observe_s`; before, the last closed window's."""
        if now - self._demand.window_started >= self.config.min_observe_s:
            return self._demand.peek(now)
        return self._demand.last()

    def _rerouted(self, inputs: WindowInputs, planned: Mapping[int, int]) -> Plan:
        # asked only of a policy that reroutes_between_windows, which is Rerouting (controller/policies.py)
        assert isinstance(self.policy, Rerouting)
        return replace(self.policy.reroute(inputs, planned), rerouted=True)


def demand_shift(seen: Mapping[int, float], planned: Mapping[int, float]) -> float:
    """Total per-class change in demand, as a share of the demand planned for."""
    change = sum(abs(seen.get(k, 0.0) - planned.get(k, 0.0)) for k in set(seen) | set(planned))
    total = sum(planned.values())
    if total > 0:
        return change / total
    return float("inf") if change > 0 else 0.0
