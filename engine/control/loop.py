"""The controller coroutine: every second, ask the controller for a plan (solved off the loop) and apply it.

The solve runs on an executor of the controller's own (the engine's one thread for it), not the loop's default
one, which other work shares (HTTP's reading of large bodies): when HTTP base64-encoded large images there, under a
flood of them a 1 s window's look every 0.1 s waited 2.2 s for a thread (150 images of 8 MB), while a solve at its
1 s time limit held a thread the encodings waited for.

With a short window it looks more often (a tenth of the window, at least every
10 ms), and after a solve it waits at least as long as the solve took: a window
shorter than a solve (`--window-s 0.01`) would otherwise run the MILP back to
back, a core's worth of solving taken from serving. After a solve that failed
(mostly waiting for a MILP process that stalled), a tick, doubling with each
failure in a row, up to as long as the failed solve took or a window, the longer. If the workers alive changed since
the plan in force was made, a plan without the solver follows them meanwhile (Controller.follow_fleet).

Workers whose batches take far longer (or shorter) than the latency profile says set the dispatcher's pace
(engine/fleet/profile_drift.py): the controller is then given the profile scaled by it, and plans anew at once.

Applying a plan moves as few workers as possible: the ones at a level with too
many leave for levels with too few, the least loaded first (the busiest keep
the level their queues were routed for). A move is a SetLevel message, not a
reload: batches in flight finish at the level they were sent at, and routing
follows the new level at once. The plan in force is applied again at every
tick, so a worker that joined since (a replacement, at the level its hello
brought) is put where the plan wants it without waiting for the next plan.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor

from controller.demand_classes import demand_class
from controller.level_shares import Choice, LevelShares, level_shares
from controller.plan import Plan
from controller.policies import Policy
from controller.predictor import Lookup
from controller.window import MIN_WINDOW_S, Controller
from engine.control.milp_process import MilpProcessError
from engine.fleet.registry import WorkerHandle, WorkerRegistry
from engine.metrics import EngineMetrics
from workers.limits import DEFAULT_STEPS

log = logging.getLogger("argus.controller")

_TICK_S = 1.0
# the pace planned at follows the workers' in steps of at least this ratio: each step is a full plan
_PACE_STEP = 1.1
# the wait after failed solves in a row doubles at most this often: the shortest tick, 10 ms, doubled 64 times is
# 5.8 billion years, past any window a run sees
_MAX_DOUBLINGS = 64
# the fallback levels kept worked out (ControlLoop.fallback_levels): at the default steps, a few hundred at most (K*,
# K' and the levels a neighbour holds); other step counts each add theirs
_MAX_FALLBACK_LEVELS_KEPT = 4096


class ControlLoop:
    def __init__(
        self,
        policy: Policy,
        controller: Controller,
        registry: WorkerRegistry,
        move: Callable[[WorkerHandle, int], None],  # puts a worker at a level and tells it so
        metrics: EngineMetrics,
        clock: Callable[[], float],
        window_s: float,
        solve_on: Executor | None = None,  # where plans are solved; None: the loop's default executor
        pace: Callable[[], float] = lambda: 1.0,  # the workers' pace against the profile (Dispatcher.pace)
    ):
        self.policy = policy
        self._pace = pace
        self._planned_pace = 1.0
        self._controller = controller
        self._registry = registry
        self._move = move
        self._metrics = metrics
        self._clock = clock
        self._solve_on = solve_on
        # look often enough to re-route within a window, however short the window is
        self._tick_s = max(MIN_WINDOW_S, min(_TICK_S, window_s / 10))
        self._window_s = window_s
        self._last_allocation: dict[int, int] = {}
        # fallback plans in a row (the solver found none): the first is warned of, and the line that ends the run
        # says how many it was
        self._fallbacks = 0
        # whether the last plan without the solver raised (_follow_fleet): as for a failed solve, one traceback a run
        self._unfollowed = False
        # fallback_levels of each (K*, K', the neighbour's steps, steps) asked: the policy's degradation matrix and
        # levels are fixed, and worked out for every request on the cache thread, the answer cost a tenth of its time
        self._kept_fallback_levels = functools.lru_cache(maxsize=_MAX_FALLBACK_LEVELS_KEPT)(
            self._work_out_fallback_levels
        )

    @property
    def plan(self) -> Plan | None:
        return self._controller.plan

    def plan_json(self) -> dict | None:
        """The plan in force for GET /plan, made at a Unix time: the controller's clock is monotonic, whose
        zero is the host's boot, not a time an operator can read."""
        plan = self.plan
        if plan is None:
            return None
        return {**plan.to_json(), "created_at": time.time() - (self._clock() - plan.created_at)}

    def choose(self, lookup: Lookup, images: int, steps: int, rng: random.Random) -> Choice:
        """The choice for the first image of a request of `images` images of `steps` steps, whose neighbour's latents
        are held at the steps `lookup.neighbour_levels`: a latent starts one image, and the others are misses, run in
        full from their own seeds (Dispatcher.route). K* and K' are levels of the default steps, which a request of
        other steps is judged at by share (controller/level_shares.py). Thread-safe: the cache thread calls it."""
        shares = self._shares(lookup.neighbour_levels, steps)
        if shares is not None:
            lookup = lookup._replace(neighbour_levels=shares.levels)
        k_star = self.policy.predict(lookup)
        # of other steps, a class of the levels it can resume at, which the plan routes it to alone; of the default
        # steps, its K*'s whatever levels its neighbour holds. It is routed by the row of the class it is counted in
        planned_as = k_star if shares is None else demand_class(k_star, shares.levels, self.policy.levels)
        plan = self._controller.plan
        level = 0 if plan is None else self.policy.choose_level(planned_as, lookup.neighbour_levels, plan, rng)
        start = level if shares is None else shares.start(level)
        # weighed by the steps it runs from where it starts, against level K''s capacity: 150 steps are about 3
        # images of the default 50. Its other images are misses, in the same arrival
        self._controller.observe_arrival(planned_as, 1, level, steps, start, bool(lookup.neighbour_levels), images - 1)
        return Choice(k_star, level, start)

    def fallback_levels(
        self, k_star: int, level: int, cached: tuple[int, ...], steps: int
    ) -> tuple[tuple[int, int], ...]:
        """(level, the step it resumes at) of the levels a job served at `level` may move up to when it must wait or
        would be late: the policy's fallback levels, of those the neighbour's latents cover (as `choose` judges)."""
        return self._kept_fallback_levels(k_star, level, cached, steps)

    def _work_out_fallback_levels(
        self, k_star: int, level: int, cached: tuple[int, ...], steps: int
    ) -> tuple[tuple[int, int], ...]:
        shares = self._shares(cached, steps)
        if shares is None:
            return tuple((up, up) for up in self.policy.fallback_levels(k_star, level, cached))
        return tuple((up, shares.start(up)) for up in self.policy.fallback_levels(k_star, level, shares.levels))

    def _shares(self, cached: tuple[int, ...], steps: int) -> LevelShares | None:
        """None at the default steps, where each step the cache holds a latent at is its own level (the cache keeps
        the policy's levels): the common case, on the path of every request, takes no mapping."""
        if steps == DEFAULT_STEPS:
            return None
        # the levels are of the default steps, as the similarity thresholds and the quality model are; not of the
        # latency profile's, which a --latency-profile measured at other steps may have
        return level_shares(cached, steps, DEFAULT_STEPS, self.policy.levels)

    async def run(self) -> None:
        # re-plans that raised in a row: the first is logged with its traceback, and the line that ends the run says
        # how many it was (the others at DEBUG: the same traceback each tick)
        failed = 0
        while True:
            started = self._clock()
            rest_s = self._tick_s
            try:
                self._follow_pace()
                plan = await asyncio.get_running_loop().run_in_executor(
                    self._solve_on, self._controller.maybe_replan, started, self._registry.in_rotation, self._where()
                )
                # a tick with nothing due solved nothing: the run of failures goes on to the next solve (ended there,
                # a solve failing every window was logged with its traceback every window)
                if plan is not None:
                    self._record(plan)
                    if failed:
                        log.info("re-planning works again after %d failed in a row", failed)
                    failed = 0
                # after a solve, at least as long as it took
                rest_s = max(rest_s, self._clock() - started)
            except Exception as exc:  # a failed solve keeps the plan in force (unless the fleet moved); serving goes on
                # one traceback per run of failures: the next tick would print the same one again. A MILP process
                # that died, stalled or failed its solve says so in one line (with the solve's own traceback): the
                # engine's stack above it, ten lines through the window and the policy, told nothing more
                own = not isinstance(exc, MilpProcessError)
                level = logging.DEBUG if failed else logging.ERROR
                log.log(level, "re-planning failed%s", "" if own else f": {exc}", exc_info=own)
                self._metrics.plan_failures.inc()
                failed += 1
                # after one that failed, a tick, doubling with each failure in a row, up to as long as it took or a
                # window, the longer: its time was mostly spent waiting for a MILP process that stalled (the time
                # limit and 5 s), and waited for as long again a worker that joined went unplaced and a changed fleet
                # unplanned for; a process that dies as it starts is not started again every tick, nor a solve that
                # fails at once (a window's plan that failed is owed at the next look) more often than a window
                # would solve it
                longest_s = max(self._clock() - started, self._window_s)
                # doubled no more than _MAX_DOUBLINGS times: as a float, 2 ** 1,024 overflowed, and a solver failing
                # at once with a 1 s window ended the control loop (and the engine) after 17 minutes
                doubled_s = self._tick_s * 2 ** min(failed - 1, _MAX_DOUBLINGS)
                rest_s = max(rest_s, min(longest_s, doubled_s))
                await self._follow_fleet()
            try:
                # even when the solve failed: a worker that joined (the change that asked for it) is placed
                if self.plan is not None:
                    self._staff(self.plan)
            except Exception:
                log.exception("applying the plan failed")
            await asyncio.sleep(rest_s)

    def _where(self) -> Counter[int]:
        """How many workers are at each level: those in rotation (one taken out as failing serves nothing)."""
        return Counter(worker.level for worker in self._registry.registered() if worker.ready)

    async def _follow_fleet(self) -> None:
        """After a failed solve, a plan without the solver for the workers alive now, if they changed since the plan in
        force (Controller.follow_fleet): the solve may have waited seconds for a MILP process that stalled."""
        try:
            plan = await asyncio.get_running_loop().run_in_executor(
                self._solve_on, self._controller.follow_fleet, self._clock(), self._registry.in_rotation, self._where()
            )
        except Exception:
            # one traceback at ERROR a run, as for a failed solve, the rest at DEBUG: the same each tick (a policy
            # whose problem cannot be made fails both), it was at ERROR each tick, for as long as the solve failed
            log.log(
                logging.DEBUG if self._unfollowed else logging.ERROR,
                "planning without the solver failed",
                exc_info=True,
            )
            self._unfollowed = True
            return
        self._unfollowed = False
        if plan is not None:
            self._record(plan)

    def _follow_pace(self) -> None:
        pace = self._pace()
        if abs(math.log(pace / self._planned_pace)) <= math.log(_PACE_STEP):
            return
        self._planned_pace = pace
        self._controller.plan_at_pace(pace)
        log.info("planning at %.2fx the latency profile's times: the workers' pace", pace)

    def _staff(self, plan: Plan) -> None:
        want = plan.workers_per_level
        ready = [worker for worker in self._registry.registered() if worker.ready]
        levels = Counter(worker.level for worker in ready)
        if all(levels[level] >= n for level, n in want.items()):
            return  # nothing to fill (the usual tick): no sort of a thousand workers on the loop
        have: Counter[int] = Counter()
        surplus = []
        for worker in sorted(ready, key=lambda w: w.load, reverse=True):
            if have[worker.level] < want.get(worker.level, 0):
                have[worker.level] += 1
            else:
                surplus.append(worker)
        targets = [level for level, n in sorted(want.items()) for _ in range(n - have[level])]
        # the least loaded move first; with the fleet changed since the plan was made, extra ones stay put
        for worker, level in zip(reversed(surplus), targets, strict=False):
            self._move(worker, level)
            self._metrics.worker_moves.inc()

    def _record(self, plan: Plan) -> None:
        m = self._metrics
        for level in self.policy.levels:
            m.plan_workers.labels(str(level)).set(plan.workers_per_level.get(level, 0))
        m.demand_rps.set(plan.total_demand_rps)
        m.solve_seconds.observe(plan.solve_ms / 1000.0)
        m.plans.labels(plan.status).inc()
        # new routes between full plans (the LP) say nothing of the allocation's solver: taken as its success, they
        # ended a run of fallbacks, and its warning was logged again every window
        if not plan.rerouted:
            self._count_fallbacks(plan)
        allocation = dict(sorted(plan.workers_per_level.items()))
        moved, self._last_allocation = allocation != self._last_allocation, allocation
        log.log(
            logging.INFO if moved else logging.DEBUG,
            "plan (%s, %s, %.1f ms): workers %s, demand %.2f img/s%s, expected quality %s",
            plan.policy,
            plan.status,
            plan.solve_ms,
            allocation,
            plan.total_demand_rps,
            unserved_words(plan),
            expected_quality_words(plan),
        )

    def _count_fallbacks(self, plan: Plan) -> None:
        # once a run, as for a solve that raises: a solver that finds nothing does so window after window
        fallbacks_before = self._fallbacks
        self._fallbacks = fallbacks_before + 1 if plan.status == "fallback" else 0
        if self._fallbacks == 1:
            log.warning(
                "the solver found no plan (%.1f ms; a missing solver, its time limit or its process failing): plans"
                " are fallbacks, the allocation kept with routes re-derived, until it does",
                plan.solve_ms,
            )
        elif fallbacks_before and not self._fallbacks:
            log.info("the solver makes plans again, after %d fallback plans in a row", fallbacks_before)


def unserved_words(plan: Plan) -> str:
    """What share of its demand a plan cannot serve, as its log line says it after the demand: nothing when it serves
    all of it (to a percent). Its expected quality is of the images it serves, so under overload the line said
    `demand 52.70 img/s, expected quality 91.2` where 56% of those images would not be made."""
    share = plan.unserved_share
    return f" ({share:.0%} of it unserved)" if round(share, 2) > 0 else ""


def expected_quality_words(plan: Plan) -> str:
    """A plan's expected quality as its log line says it. It is NaN when the plan serves no image, not a figure an
    operator should have to decode; and that is not always for want of demand: with every worker gone while requests
    still come, the line said `demand 6.10 img/s, expected quality none (nothing to serve)`."""
    if not math.isnan(plan.expected_quality):
        return f"{plan.expected_quality:.1f}"
    if plan.total_demand_rps <= 0:
        return "none (nothing to serve)"
    if plan.workers == 0:
        return "none (no worker to serve it)"
    return "none (the plan serves none of it)"
