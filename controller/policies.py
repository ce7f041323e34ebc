"""Five policies behind one interface, switched by name (the table in ../shared/ARCHITECTURE.md).

| policy       | allocation                                   | K' for one prompt                           |
| argus        | MILP each window, route-planner LP between   | K* predicted per prompt, then K' ~ r[K*]     |
| clipper-ha   | every worker at K = 0                        | always 0                                     |
| clipper-ht   | every worker at the largest K                | always the largest K (a miss runs in full)   |
| nirvana      | one pool, left as it is (no load awareness)  | K from the similarity table alone            |
| proteus      | MILP on quality per K averaged over prompts  | K' ~ the routing fractions, prompt ignored   |

Whatever a policy picks, a prompt is only ever served at a level its
neighbour has a latent for: the highest stored level at or below the pick,
else 0 (a miss always runs in full). So a plan's row for class 0 (misses and
neighbours too far for any level) says where both run: the far neighbours at
the level picked, the misses at 0; its expected quality counts each where it
runs. Without a prompt cache every prompt is a miss, and a policy plans and
serves level 0 alone. Requests that can resume at some levels alone (of other
steps than the default) are classes of their own (controller/demand_classes.py):
argus routes them only to those levels and 0, and a fixed row counts them where
its picks run for them.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from controller.allocation import Allocator, allocate, fallback, fit_allocation
from controller.demand_classes import DemandClass, Reach, best_level, runs_at
from controller.flow_model import FlowProblem, FlowSolution, SolverOptions, plan_from_rows, plan_from_solution
from controller.plan import Plan
from controller.predictor import KPredictor, Lookup, SimilarityPredictor, stored_level_at_most
from controller.profiles import DegradationMatrix, LatencyProfile
from controller.route_planner import route
from workers.limits import DEFAULT_STEPS

# Proteus's single, input-agnostic class
ANY_PROMPT = -1
# argus moves a job up a level only while its class's expected quality there stays at least this (percent of
# the exact image): further off, an image is worth less than an honest deadline_exceeded. A miss has no level
# above 0 to move to: its neighbour is too far for any.
ESCALATION_QUALITY_FLOOR = 75.0


@dataclass(frozen=True)
class WindowInputs:
    now: float
    workers: int  # workers alive
    current: Mapping[int, int]  # workers per level now
    demand_rps: float  # images/s to plan for (of the default steps, see WorkPerImage), headroom included
    k_mix: Mapping[DemandClass, float]  # share of arrivals per predicted K* (or a Reach of it)
    slo_s: float
    # of class 0's demand, the share with a neighbour's latent (served at the level a policy picks regardless of the
    # class); the rest are misses, which run at 0 whatever it picks
    far_share: float = 0.0

    def class_demand(self) -> dict[DemandClass, float]:
        return {k: self.demand_rps * share for k, share in self.k_mix.items()}


class Policy(Protocol):
    name: str
    profile: LatencyProfile  # what capacities are planned with; demand is counted in images of the default steps
    levels: tuple[int, ...]  # the levels it plans and serves, of the default 50 steps; 0 first

    def predict(self, lookup: Lookup) -> int:
        """K* for one prompt (what the demand mix counts)."""

    def plan(self, inputs: WindowInputs) -> Plan:
        """A full plan for the window; may solve a MILP, so run it off the event loop."""

    @property
    def reroutes_between_windows(self) -> bool:
        """Whether the demand moving between full plans re-derives the routes: whether the policy is also Rerouting."""

    def choose_level(self, k: DemandClass, neighbour_levels: tuple[int, ...], plan: Plan, rng: random.Random) -> int:
        """K' for one prompt of class `k`, the one its demand is counted in (its K*, or a Reach of it: ControlLoop.
        choose); never a level its neighbour has no latent for."""

    @property
    def escalates(self) -> bool:
        """Whether a job about to miss its deadline moves up to its neighbour's highest stored level."""

    def fallback_levels(self, k_star: int, level: int, neighbour_levels: tuple[int, ...]) -> tuple[int, ...]:
        """The neighbour's levels above `level` a job may move up to when it must wait or would be late."""

    @property
    def plans_for_bursts(self) -> bool:
        """Whether a rise in demand is planned for at once (controller/demand.py, fast_attack)."""


@runtime_checkable
class Solving(Protocol):
    """What the policies that solve their allocation (argus, Proteus) can do beside Policy: a plan without the solver,
    for when the solver's process fails (engine/control/milp_process.py)."""

    def plan_without_solver(self, inputs: WindowInputs) -> Plan:
        """The workers where they are (`inputs.current`, fitted to `inputs.workers`), with the route-planner LP's
        routes: status fallback, as a solve that finds no plan gives."""


@runtime_checkable
class Rerouting(Protocol):
    """What argus alone can do beside Policy: new routes between full plans. Declared on Policy, every baseline was
    said to have it, and had none."""

    def reroute(self, inputs: WindowInputs, workers_per_level: Mapping[int, int]) -> Plan:
        """New routes for workers that stay where they are (the demand moved between full plans)."""


def make_policy(
    name: str,
    profile: LatencyProfile,
    degradation: DegradationMatrix,
    predictor: KPredictor,
    allocator: Allocator = allocate,
    levels: tuple[int, ...] | None = None,
    **options: object,
) -> Policy:
    """`allocator` solves the allocation MILP; `levels`: those it plans and serves, 0 and some of the degradation
    matrix's (None: all of them; (0,) without a prompt cache, where nothing resumes); `options` are SolverOptions
    fields (mip_solver, lp_solver, time_limit_ms, move_penalty)."""
    if name not in _POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICY_NAMES)}")
    levels = levels or degradation.levels
    if levels[0] != 0 or not set(levels) <= set(degradation.levels):
        raise ValueError(f"levels {levels}: 0 first, then some of {degradation.levels[1:]}")
    missing = set(levels) - set(profile.levels)
    if missing:
        raise ValueError(f"the latency profile has no latencies for levels {sorted(missing)}")
    return _POLICIES[name](profile, degradation, predictor, SolverOptions(**options), allocator, levels)


def sample_level(row: Mapping[int, float], rng: random.Random) -> int:
    levels = sorted(row)
    u = rng.random()
    cumulative = 0.0
    for level in levels:
        cumulative += row[level]
        if u < cumulative:
            return level
    return levels[-1]  # float rounding can leave the shares' sum a hair under 1


class _Base:
    name = ""
    # at dispatch, a job that would miss its deadline at its level is served from its neighbour's highest
    # stored level instead (argus's route-and-batch); the baselines keep their pick and miss
    escalates = False
    # the baselines plan for the EWMA of the rate, as Proteus does
    plans_for_bursts = False

    def __init__(
        self,
        profile: LatencyProfile,
        degradation: DegradationMatrix,
        predictor: KPredictor,
        options: SolverOptions,
        allocator: Allocator,
        levels: tuple[int, ...],
    ):
        self.profile = profile
        self.degradation = degradation
        self.predictor = predictor
        self.options = options
        self.allocator = allocator
        self.levels = levels

    @property
    def reroutes_between_windows(self) -> bool:
        # between full plans, argus re-derives its routes from the demand seen so far (its K-to-K' route planner, the
        # LP); Proteus keeps the routing fractions of its last solve until the next (its MILP re-solved every 10 s,
        # nothing in between, as published), and the fixed policies' routes follow from their rule
        return isinstance(self, Rerouting)

    def predict(self, lookup: Lookup) -> int:
        return self.predictor.predict(lookup)

    def fallback_levels(self, k_star: int, level: int, neighbour_levels: tuple[int, ...]) -> tuple[int, ...]:
        return ()

    def _problem(self, inputs: WindowInputs) -> FlowProblem:
        capacity = {kp: planned_capacity_rps(self.profile, kp, inputs.slo_s) for kp in self.levels}
        return FlowProblem.per_class(self.degradation, capacity, inputs.class_demand(), self.levels)


def with_reaches(rows: Mapping[int, Mapping[int, float]], inputs: WindowInputs) -> dict[DemandClass, dict[int, float]]:
    """`rows`, a policy's picks for each K*, and for each Reach in the demand where its K*'s picks run for it."""
    reaches = {k: runs_at(rows[k.k_star], k) for k in inputs.k_mix if isinstance(k, Reach)}
    return {k: dict(row) for k, row in rows.items()} | reaches


def planned_capacity_rps(profile: LatencyProfile, level: int, slo_s: float) -> float:
    """One worker's images/s at `level` within the SLO, in images of the default steps (the demand's unit, see
    WorkPerImage): the rule of LatencyProfile.capacity_rps on batches of the default steps a request runs, which the
    SLO is of, not on batches of the profile's N. On its own batches, a profile measured at 30 steps planned workers
    to serve half as many again 50-step images as they can within the SLO, and one at 100 steps none at all at levels
    0 to 20."""
    return profile.at_any_steps.capacity_rps(level, DEFAULT_STEPS, slo_s)


def where_class_0_runs(picked: Mapping[int, float], far_share: float) -> dict[int, float]:
    """Class 0's row when a policy picks `picked` for its prompts: its far neighbours run there, its misses at 0 (no
    latent to resume from, whatever the pick)."""
    row = {kp: far_share * p for kp, p in picked.items() if kp and far_share * p > 0}
    # the rest, so that the row sums to 1 (and a pick of level 0 alone stays exactly {0: 1})
    misses_and_picked_0 = 1.0 - sum(row.values())
    return ({0: misses_and_picked_0} if misses_and_picked_0 > 0 else {}) | row


# -- solved each window ------------------------------------------------------------------
class _Solved(_Base):
    def plan(self, inputs: WindowInputs) -> Plan:
        problem = self._problem(inputs)
        return self._finish(inputs, problem, self.allocator(problem, inputs.workers, inputs.current, self.options))

    def plan_without_solver(self, inputs: WindowInputs) -> Plan:
        problem = self._problem(inputs)
        return self._finish(inputs, problem, fallback(problem, inputs.workers, inputs.current, self.options))

    def _finish(self, inputs: WindowInputs, problem: FlowProblem, solution: FlowSolution) -> Plan:
        return plan_from_solution(problem, solution, self.name, inputs.now)


class Argus(_Solved):
    name = "argus"
    escalates = True
    plans_for_bursts = True

    def reroute(self, inputs: WindowInputs, workers_per_level: Mapping[int, int]) -> Plan:
        problem = self._problem(inputs)
        return self._finish(inputs, problem, route(problem, workers_per_level, self.options))

    def fallback_levels(self, k_star: int, level: int, neighbour_levels: tuple[int, ...]) -> tuple[int, ...]:
        degradation = self.degradation
        return tuple(
            sorted(
                kp
                for kp in neighbour_levels
                if kp > level
                and degradation.allowed(kp, k_star)
                and degradation.quality(kp, k_star) >= ESCALATION_QUALITY_FLOOR
            )
        )

    def choose_level(self, k: DemandClass, neighbour_levels: tuple[int, ...], plan: Plan, rng: random.Random) -> int:
        # the row of the class its demand is counted in (a Reach's once the plan has seen its like): one of the
        # default steps whose neighbour lacks levels read a Reach's, planned for other steps' traffic, and ran where
        # the plan had counted that traffic, not its own
        row = plan.redirect.get(k) or plan.redirect[best_level(k)]
        return stored_level_at_most(sample_level(row, rng), neighbour_levels)


class Proteus(_Solved):
    """Input-agnostic: one class of all prompts, and each level's quality averaged over the prompts
    it could serve (the hit classes, weighted by the observed mix)."""

    name = "proteus"

    def _problem(self, inputs: WindowInputs) -> FlowProblem:
        hits = {k: sum(share for c, share in inputs.k_mix.items() if best_level(c) == k) for k in self.levels if k}
        # no hit class (no prompt cache): level 0 alone, whose quality is class 0's, 100
        weights = hits if sum(hits.values()) > 0 else dict.fromkeys(hits or (0,), 1.0)
        total = sum(weights.values())
        average = {
            kp: sum(w * self.degradation.quality(kp, k) for k, w in weights.items()) / total for kp in self.levels
        }
        return FlowProblem(
            self.levels,
            {kp: planned_capacity_rps(self.profile, kp, inputs.slo_s) for kp in self.levels},
            {ANY_PROMPT: inputs.demand_rps},
            {ANY_PROMPT: average},
            {ANY_PROMPT: {kp: max(0.0, average[0] - q) for kp, q in average.items()}},
        )

    def _finish(self, inputs: WindowInputs, problem: FlowProblem, solution: FlowSolution) -> Plan:
        plan = plan_from_solution(problem, solution, self.name, inputs.now)
        row = plan.redirect[ANY_PROMPT]
        rows = with_reaches({k: row for k in self.levels} | {0: where_class_0_runs(row, inputs.far_share)}, inputs)
        # what is served, and its quality, where the images run, by class: its solve counted every image at the
        # average of the hit classes, and at the capacity of the level its row picks, misses (which run at 0) and far
        # neighbours (which lose more than any hit) alike
        by_class = super()._problem(inputs)
        return plan_from_rows(by_class, plan.workers_per_level, rows, self.name, inputs.now, plan.status, plan.solve_ms)

    def choose_level(self, k: DemandClass, neighbour_levels: tuple[int, ...], plan: Plan, rng: random.Random) -> int:
        # the hit classes' rows are the one routing row (class 0's also holds its misses); reading the top level's
        # whatever K* is makes the prompt's irrelevance explicit
        return stored_level_at_most(sample_level(plan.redirect[self.levels[-1]], rng), neighbour_levels)


# -- nothing to solve ----------------------------------------------------------------------
class _Fixed(_Base):
    """Allocation and routes follow from the rule; served and quality are what those routes serve (plan_from_rows)."""

    def plan(self, inputs: WindowInputs) -> Plan:
        rows = {k: self._row(k) for k in self.levels}
        rows[0] = where_class_0_runs(rows[0], inputs.far_share)
        rows = with_reaches(rows, inputs)
        return plan_from_rows(self._problem(inputs), self._allocation(inputs), rows, self.name, inputs.now, "fixed")

    def _allocation(self, inputs: WindowInputs) -> dict[int, int]:
        raise NotImplementedError

    def _row(self, k: int) -> dict[int, float]:
        """Where the policy picks for class k's prompts (class 0's misses run at 0 all the same)."""
        raise NotImplementedError


class ClipperHA(_Fixed):
    name = "clipper-ha"

    def _allocation(self, inputs: WindowInputs) -> dict[int, int]:
        return {0: inputs.workers}

    def _row(self, k: int) -> dict[int, float]:
        return {0: 1.0}

    def choose_level(self, k: DemandClass, neighbour_levels: tuple[int, ...], plan: Plan, rng: random.Random) -> int:
        return 0


class ClipperHT(_Fixed):
    name = "clipper-ht"

    def _allocation(self, inputs: WindowInputs) -> dict[int, int]:
        return {self.levels[-1]: inputs.workers}

    def _row(self, k: int) -> dict[int, float]:
        return {self.levels[-1]: 1.0}

    def choose_level(self, k: DemandClass, neighbour_levels: tuple[int, ...], plan: Plan, rng: random.Random) -> int:
        return stored_level_at_most(self.levels[-1], neighbour_levels)


class Nirvana(_Fixed):
    """One pool: workers stay at whatever level they are at, and each prompt runs at its table level."""

    name = "nirvana"

    @functools.cached_property
    def table_predictor(self) -> SimilarityPredictor:
        """NIRVANA's level is the embedder's table alone, whatever predictor the engine was given."""
        return SimilarityPredictor(self.degradation.table)

    def predict(self, lookup: Lookup) -> int:
        return self.table_predictor.predict(lookup)

    def _allocation(self, inputs: WindowInputs) -> dict[int, int]:
        return fit_allocation(inputs.current, inputs.workers, self.levels)

    def _row(self, k: int) -> dict[int, float]:
        return {k: 1.0}

    def choose_level(self, k: DemandClass, neighbour_levels: tuple[int, ...], plan: Plan, rng: random.Random) -> int:
        return stored_level_at_most(best_level(k), neighbour_levels)


_POLICIES: dict[str, type[_Base]] = {
    "argus": Argus,
    "clipper-ha": ClipperHA,
    "clipper-ht": ClipperHT,
    "nirvana": Nirvana,
    "proteus": Proteus,
}
POLICY_NAMES = tuple(_POLICIES)
