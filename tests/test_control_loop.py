"""The control loop staffs levels as the plan says: the least loaded move, and newcomers are placed too."""

import asyncio
import itertools
import logging
import os
import random
import signal
from collections import Counter

import pytest
from dispatcher_harness import Harness
from process_checks import milp_processes_of
from waiting import eventually

from controller.flow_model import SolverOptions
from controller.plan import Plan
from controller.policies import make_policy
from controller.predictor import Lookup, SimilarityPredictor
from controller.profiles import DegradationMatrix, LatencyProfile, QualityModel
from controller.similarity import SimilarityTable
from controller.window import Controller, ControllerConfig
from engine.control.loop import ControlLoop, expected_quality_words, unserved_words
from engine.control.milp_process import MilpProcess, MilpProcessError


class FixedController:
    """A controller whose plan never changes (no demand shift, no new window)."""

    def __init__(self, workers_per_level: dict[int, int]):
        self.plan = Plan("argus", workers_per_level, {}, {}, 0.0, float("nan"), 0.0, 0.0, "optimal")

    def maybe_replan(self, now: float, workers_alive: int, where=None) -> Plan | None:
        return None

    def follow_fleet(self, now: float, workers_alive: int, where) -> Plan | None:
        return None


class Levels:
    levels = (0, 5, 10, 15, 20, 25)


def recorded_in(moves: list):
    """A worker move that places the worker and records (its name, the level) in `moves`."""

    def move(worker, level):
        moves.append((worker.name, level))
        worker.level = level

    return move


def control_loop(h: Harness, workers_per_level: dict[int, int], moves: list) -> ControlLoop:
    return ControlLoop(
        Levels(), FixedController(workers_per_level), h.registry, recorded_in(moves), h.metrics, h.clock, 1.0
    )


def fleet_at_0_0_15_25() -> Harness:
    h = Harness()
    for name, level in (("a", 0), ("b", 0), ("c", 15), ("d", 25)):
        h.add_worker(name, level=level)
    return h


async def test_the_least_loaded_worker_leaves_an_overstaffed_level():
    h = Harness()
    busy = h.add_worker("busy")
    h.add_worker("idle")
    busy.queue.extend([object()] * 3)  # images routed to it, for level 0
    moves = []
    loop = control_loop(h, {0: 1, 25: 1}, moves)
    running = asyncio.create_task(loop.run())
    try:
        assert await eventually(lambda: moves)
        assert moves == [("idle", 25)]
    finally:
        running.cancel()


async def test_a_worker_that_joins_under_a_plan_is_put_where_the_plan_wants_it():
    h = Harness()
    at_zero = h.add_worker("a", level=0)
    for name in ("b", "c"):
        h.add_worker(name, level=25)
    moves = []
    loop = control_loop(h, {0: 1, 25: 2}, moves)
    running = asyncio.create_task(loop.run())
    try:
        # the one at level 0 is replaced: its successor says hello at the level it last ran (25)
        h.dispatcher.worker_lost(at_zero, "exited")
        h.add_worker("d", level=25)
        assert await eventually(lambda: Counter(w.level for w in h.registry.registered()) == {0: 1, 25: 2})
        assert moves == [("d", 0)]
    finally:
        running.cancel()


class FailingController(FixedController):
    """A controller with a plan in force whose every new solve fails."""

    def maybe_replan(self, now: float, workers_alive: int, where=None) -> Plan | None:
        raise RuntimeError("the solver failed")


async def test_a_failed_solve_still_staffs_the_plan_in_force():
    h = Harness()
    h.add_worker("a", level=0)
    moves = []
    loop = ControlLoop(
        Levels(), FailingController({0: 1, 25: 1}), h.registry, recorded_in(moves), h.metrics, h.clock, 1.0
    )
    running = asyncio.create_task(loop.run())
    try:
        # a worker joins: the controller re-plans for the new fleet, fails, and the plan in force places it
        h.add_worker("b", level=0)
        assert await eventually(lambda: moves)
        assert moves == [("b", 25)]
    finally:
        running.cancel()


class SlowController(FixedController):
    """A controller whose every solve takes `solve_s` on the harness's clock; its first `failures` solves fail, and the
    others make the plan it has again."""

    def __init__(self, clock, solve_s: float, failures: int = 0):
        super().__init__({0: 1})
        self._clock, self._solve_s, self._failures = clock, solve_s, failures

    def maybe_replan(self, now: float, workers_alive: int, where=None) -> Plan | None:
        self._clock.now += self._solve_s
        if self._failures:
            self._failures -= 1
            raise RuntimeError("the solver failed")
        return self.plan


async def ticks(loop: ControlLoop, monkeypatch, count: int, clock=None) -> list[float]:
    """The waits between the control loop's first `count` solves (each passing on `clock`, when given)."""
    waits = []

    async def recorded_sleep(delay):
        waits.append(delay)
        if clock is not None:
            clock.now += delay
        if len(waits) == count:
            raise asyncio.CancelledError

    monkeypatch.setattr(asyncio, "sleep", recorded_sleep)
    try:
        await loop.run()
    except asyncio.CancelledError:
        pass
    finally:
        monkeypatch.undo()
    return waits


async def test_a_window_shorter_than_a_solve_does_not_solve_back_to_back(monkeypatch):
    h = Harness()
    h.add_worker("a", level=0)
    loop = ControlLoop(Levels(), SlowController(h.clock, 0.3), h.registry, lambda w, k: None, h.metrics, h.clock, 1e-9)
    # the loop waits at least as long as each solve took: solving takes at most half of the time
    assert await ticks(loop, monkeypatch, 3) == pytest.approx([0.3] * 3)
    fast = ControlLoop(Levels(), SlowController(h.clock, 0.0), h.registry, lambda w, k: None, h.metrics, h.clock, 1e-9)
    assert await ticks(fast, monkeypatch, 3) == [0.01] * 3  # the shortest tick, however short the window


async def test_a_solve_that_failed_after_a_long_wait_is_not_waited_for_again(monkeypatch):
    """A MILP process that stalled fails its solve after the time limit and its answer margin (30 s then, 5 s now
    once it has answered): the loop then waited as long again before it looked: for 62 s in all (a sim engine whose
    MILP process was stopped), a worker that joined was not placed and a fleet that changed not planned for. A
    failure solved nothing to take a rest from."""
    h = Harness()
    h.add_worker("a", level=0)
    controller = SlowController(h.clock, 31.0, failures=1)
    loop = ControlLoop(Levels(), controller, h.registry, lambda w, k: None, h.metrics, h.clock, 1.0)
    # the next look a tick after the failure; a solve that made a plan is still waited for as long as it took
    assert await ticks(loop, monkeypatch, 2) == pytest.approx([0.1, 31.0])


async def test_failed_solves_in_a_row_are_retried_a_tick_doubling_up_to_as_long_as_they_took(monkeypatch):
    """A MILP process that dies as it starts (half a second each) was started again every tick (10 ms with a short
    window), a core spent starting processes."""
    h = Harness()
    h.add_worker("a", level=0)
    controller = SlowController(h.clock, 0.5, failures=8)
    loop = ControlLoop(Levels(), controller, h.registry, lambda w, k: None, h.metrics, h.clock, 0.1)
    assert await ticks(loop, monkeypatch, 8) == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5])


async def test_a_solve_that_fails_at_once_is_retried_doubling_up_to_a_window(monkeypatch):
    """A full plan that failed is owed at the next look: a solver that failed at once was asked again every tick (a
    second at the default 10 s window), ten times as often as a window asks."""
    h = Harness()
    h.add_worker("a", level=0)
    controller = SlowController(h.clock, 0.0, failures=8)
    loop = ControlLoop(Levels(), controller, h.registry, lambda w, k: None, h.metrics, h.clock, 1.0)
    assert await ticks(loop, monkeypatch, 8) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0])


async def test_a_solver_that_fails_for_hours_leaves_the_loop_looking_every_window(monkeypatch):
    """The wait doubled with each failure in a row as a float of 2 ** failures: past 1,024 failures (17 minutes of a
    MILP process that dies at once, with a 1 s window) it overflowed, and the OverflowError ended the control loop,
    and with it the engine."""
    h = Harness()
    h.add_worker("a", level=0)
    controller = SlowController(h.clock, 0.0, failures=2000)
    loop = ControlLoop(Levels(), controller, h.registry, lambda w, k: None, h.metrics, h.clock, 1.0)
    waits = await ticks(loop, monkeypatch, 1100)
    assert waits[-100:] == pytest.approx([1.0] * 100)


async def test_a_solver_that_keeps_failing_logs_one_traceback(monkeypatch, caplog):
    h = Harness()
    h.add_worker("a", level=0)
    controller = SlowController(h.clock, 0.0, failures=4)
    loop = ControlLoop(Levels(), controller, h.registry, lambda w, k: None, h.metrics, h.clock, 1.0)
    with caplog.at_level(logging.DEBUG, logger="argus.controller"):
        await ticks(loop, monkeypatch, 5)
    failures = [r for r in caplog.records if r.getMessage() == "re-planning failed"]
    assert [r.levelno for r in failures] == [logging.ERROR] + [logging.DEBUG] * 3
    assert failures[0].exc_info is not None
    # the failures at DEBUG are counted where the run ends: it said only that it had
    assert "re-planning works again after 4 failed in a row" in caplog.messages


class FallbackController(FixedController):
    """A controller whose solver fails twice with a fallback plan, then raises."""

    def __init__(self):
        super().__init__({0: 1, 25: 1})
        self._made = 0

    def maybe_replan(self, now: float, workers_alive: int, where=None) -> Plan | None:
        self._made += 1
        if self._made > 2:
            raise RuntimeError("the solver failed")
        self.plan = Plan("argus", {0: 1, 25: 1}, {}, {}, 0.0, float("nan"), 2.0, now, "fallback")
        return self.plan


async def test_failed_solves_and_moves_are_counted(monkeypatch):
    """A solver that keeps failing logged one traceback, and then nothing an operator could see."""
    h = Harness()
    h.add_worker("a", level=0), h.add_worker("b", level=0)
    loop = ControlLoop(Levels(), FallbackController(), h.registry, lambda w, k: None, h.metrics, h.clock, 1.0)
    await ticks(loop, monkeypatch, 5)
    sample = h.metrics.registry.get_sample_value
    assert sample("argus_plans_total", {"status": "fallback"}) == 2
    assert sample("argus_plan_failures_total") == 3
    assert sample("argus_worker_moves_total") == 5  # the move is not applied here: each tick moves again
    assert sample("argus_plan_solve_seconds_sum") == pytest.approx(0.004)


def argus_policy():
    table = SimilarityTable.bundled("hash")
    degradation = DegradationMatrix.from_quality_model(QualityModel(table))
    return make_policy("argus", LatencyProfile.bundled(), degradation, SimilarityPredictor(table))


def planning_every_tick(policy, *workers: str, slo_s: float = 15.0) -> tuple[Harness, Controller, ControlLoop]:
    """A control loop for `workers` (each at level 0) whose window is a tick: a full plan, the MILP, at every tick."""
    h = Harness()
    for name in workers:
        h.add_worker(name, level=0)
    controller = Controller(policy, ControllerConfig(window_s=1e-9, min_observe_s=0.0, slo_s=slo_s), h.clock.now)
    return h, controller, ControlLoop(policy, controller, h.registry, lambda w, k: None, h.metrics, h.clock, 1e-9)


async def test_a_plan_with_nothing_to_serve_is_logged_without_a_nan(monkeypatch, caplog):
    """Its expected quality is NaN (no image to average over): the log said "expected quality nan"."""
    h, controller, loop = planning_every_tick(argus_policy(), "a")
    with caplog.at_level(logging.DEBUG, logger="argus.controller"):
        await ticks(loop, monkeypatch, 2, h.clock)
    (logged, *_) = [m for m in caplog.messages if m.startswith("plan (argus, optimal")]
    assert logged.endswith("demand 0.00 img/s, expected quality none (nothing to serve)")


async def test_a_plan_of_no_worker_for_its_demand_does_not_say_there_is_nothing_to_serve(monkeypatch, caplog):
    """Every worker gone (a fleet stopped) while requests still came: the line said `demand 6.10 img/s, expected
    quality none (nothing to serve)`, contradicting itself where an operator looks for why nothing is served."""
    h, controller, loop = planning_every_tick(argus_policy(), "a")
    with caplog.at_level(logging.DEBUG, logger="argus.controller"):
        await ticks(loop, monkeypatch, 1, h.clock)
        (worker,) = h.registry.registered()
        h.dispatcher.worker_lost(worker, "exited")
        for _ in range(20):
            controller.observe_arrival(0)
        await ticks(loop, monkeypatch, 2, h.clock)
    (logged, *_) = [m for m in caplog.messages if "workers {0: 0," in m]
    assert "expected quality none (no worker to serve it)" in logged
    assert "nothing to serve" not in logged


async def test_an_overloaded_plan_logs_the_share_of_its_demand_it_cannot_serve(monkeypatch, caplog):
    """Its expected quality is of the images it serves: the line said `demand 52.70 img/s, expected quality 91.2`
    where half the demand would get no image."""
    h, controller, loop = planning_every_tick(argus_policy(), "a")
    with caplog.at_level(logging.DEBUG, logger="argus.controller"):
        await ticks(loop, monkeypatch, 1, h.clock)
        for _ in range(2000):
            controller.observe_arrival(25)
        await ticks(loop, monkeypatch, 1, h.clock)
    plan = controller.plan
    assert plan.unserved_share > 0.5  # one worker, 2000 images in a tick
    (logged,) = [m for m in caplog.messages if m.startswith("plan (argus") and "unserved" in m]
    assert f"img/s ({plan.unserved_share:.0%} of it unserved), expected quality {plan.expected_quality:.1f}" in logged


def test_a_plan_serving_its_whole_demand_logs_no_unserved_share():
    plan = Plan("argus", {0: 2}, {0: {0: 1.0}}, {0: 0.3}, 0.3 * (1 - 1e-4), 100.0, 1.0, 0.0, "optimal")
    assert unserved_words(plan) == ""


def test_a_plan_whose_workers_serve_none_of_its_demand_says_so():
    """Workers whose every batch is past the SLO serve nothing: that is not for want of demand either."""
    plan = Plan("argus", {0: 2}, {0: {0: 1.0}}, {0: 3.0}, 0.0, float("nan"), 1.0, 0.0, "optimal")
    assert expected_quality_words(plan) == "none (the plan serves none of it)"


async def test_a_solver_that_keeps_falling_back_warns_once(monkeypatch, caplog):
    """A MILP that found no plan window after window (OR-Tools without the solver, or the time limit hit on a
    loaded host) was logged as an ordinary plan, at DEBUG once the kept allocation stopped changing: only a
    counter told an operator the controller no longer solved anything."""
    policy = argus_policy()
    policy.options = SolverOptions(mip_solver="NO_SUCH_SOLVER")
    h, controller, loop = planning_every_tick(policy, "a", "b")

    with caplog.at_level(logging.INFO, logger="argus.controller"):
        await ticks(loop, monkeypatch, 4, h.clock)
        assert controller.plan.status == "fallback"
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1 and "fallback" in warned[0].getMessage()
        fallbacks = h.metrics.registry.get_sample_value("argus_plans_total", {"status": "fallback"})
        assert fallbacks > 1
        policy.options = SolverOptions()
        await ticks(loop, monkeypatch, 2, h.clock)
    assert controller.plan.status == "optimal"
    assert f"the solver makes plans again, after {fallbacks:.0f} fallback plans in a row" in caplog.messages
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_a_request_is_counted_at_its_steps_and_the_step_it_resumes_at():
    """The engine's path into the demand: `choose` is handed the request's steps and weighs its images by the steps
    they run from where they resume, against the level they are served at (a 150-step image from step 25, served at
    level 10, is 2.8 of that level's 50-step images; one of 50, 1). At 150 steps the neighbour's steps 5 to 25 are 3%
    to 17% of the run: judged as levels 5 and 10 (10% and 20%). A latent starts one image: a request's others are
    misses, run in full (Dispatcher.route)."""
    table = SimilarityTable.bundled("clip")
    degradation = DegradationMatrix.from_quality_model(QualityModel(table))
    policy = make_policy("argus", LatencyProfile.bundled(), degradation, SimilarityPredictor(table))
    h = Harness()
    # alpha 1: each window's rate is planned for as it is
    controller = Controller(policy, ControllerConfig(window_s=10.0, ewma_alpha=1.0), now=0.0)
    controller.maybe_replan(0.0, 4)
    controller.observe_arrival(25, 30)
    controller.maybe_replan(10.0, 4)  # 3 images/s of class 25: workers at the high levels
    loop = ControlLoop(policy, controller, h.registry, lambda w, k: None, h.metrics, h.clock, 10.0)
    hit = Lookup(similarity=0.97, neighbour_levels=(5, 10, 15, 20, 25), prompt="a cat", neighbour_prompt="a cat.")
    rng = random.Random(0)
    choice = loop.choose(hit, 2, 150, rng)
    loop.choose(hit, 3, 50, rng)
    plan = controller.maybe_replan(20.0, 4)
    assert choice.k_star == 10 and (choice.level, choice.start) in ((5, 15), (10, 25))
    # its own steps from where it starts, against the capacity of the level it is served at; its second image, and
    # the second request's last two, in full
    resumed = (0.6 + 0.09 * (150 - choice.start)) / (0.6 + 0.09 * (50 - choice.level))
    in_full = (0.6 + 0.09 * 150) / (0.6 + 0.09 * 50) + 2
    assert plan.total_demand_rps == pytest.approx(1.05 * (resumed + 1 + in_full) / 10.0)
    assert plan.demand_rps[0] == pytest.approx(1.05 * in_full / 10.0)  # misses: no latent of their own


def test_a_request_of_many_images_is_one_arrival_to_the_burst_test():
    """Its first image may be a hit and the others are misses (two classes), but a request of 2 images is one
    arrival, as likely as a lone image: counted as two (1 image and 1), the burst test took its noise for half what
    it is, and argus planned for a burst of 1 image/s where a steady 0.1 came. Under a steady load of 2-image requests
    steady windows passed it at 4% of the looks, against 1% for lone images (docs/controller.md, Demand)."""
    table = SimilarityTable.bundled("clip")
    degradation = DegradationMatrix.from_quality_model(QualityModel(table))
    policy = make_policy("argus", LatencyProfile.bundled(), degradation, SimilarityPredictor(table))
    h = Harness()
    controller = Controller(policy, ControllerConfig(window_s=10.0), now=0.0)
    controller.maybe_replan(0.0, 4)
    controller.observe_arrival(0)
    controller.maybe_replan(10.0, 4)  # 0.1 images/s
    loop = ControlLoop(policy, controller, h.registry, lambda w, k: None, h.metrics, h.clock, 10.0)
    loop.choose(Lookup(similarity=None, prompt="a cat"), 2, 50, random.Random(0))
    plan = controller.maybe_replan(12.0, 4)
    # 2 images where 0.2 were due: within 3 standard deviations of a Poisson count of 2-image requests, so the EWMA
    # (half the window's 1 image/s, half the 0.1 before), not the window's own rate
    assert plan.total_demand_rps == pytest.approx(1.05 * (0.5 * 1.0 + 0.5 * 0.1))


async def test_a_plan_for_a_changed_fleet_moves_no_worker_the_demand_does_not_ask_for(monkeypatch):
    """The MILP's moving penalty was counted from the plan before, not from where the workers were: a sim engine of 8
    with no demand moved a worker that joined at level 0 to level 15, and when that one died, moved another from 0 to
    15 to fill the gap the plan before had there. Plans move workers for the demand alone. (At an SLO of 10 s, where
    level 0 makes no image in time: at one it does, a plan of no demand puts every worker there, the test below.)"""
    policy = argus_policy()
    h = fleet_at_0_0_15_25()
    moves = []
    controller = Controller(policy, ControllerConfig(window_s=10.0, slo_s=10.0), h.clock.now)
    loop = ControlLoop(policy, controller, h.registry, recorded_in(moves), h.metrics, h.clock, 10.0)
    fleets = []
    for change in (lambda: None, lambda: h.dispatcher.worker_lost(h.registry.by_worker_id("c")[0], "exited")):
        change()
        await ticks(loop, monkeypatch, 2, h.clock)
        fleets.append(dict(controller.plan.workers_per_level))
    h.add_worker("e", level=10)
    await ticks(loop, monkeypatch, 2, h.clock)
    assert controller.plan.workers == 4
    assert moves == []
    assert fleets == [{0: 2, 5: 0, 10: 0, 15: 1, 20: 0, 25: 1}, {0: 2, 5: 0, 10: 0, 15: 0, 20: 0, 25: 1}]


async def test_an_idle_engine_moves_its_workers_at_cache_levels_back_to_level_0(monkeypatch):
    """After a burst, an idle sim engine of 4 kept a worker at level 15 for good: with no demand every allocation scored
    the same, and the move penalty kept the one running. A worker that serves nothing costs nothing to move."""
    policy = argus_policy()
    h = fleet_at_0_0_15_25()
    moves = []
    controller = Controller(policy, ControllerConfig(window_s=10.0), h.clock.now)
    loop = ControlLoop(policy, controller, h.registry, recorded_in(moves), h.metrics, h.clock, 10.0)
    await ticks(loop, monkeypatch, 2, h.clock)
    assert controller.plan.workers_per_level == {0: 4, 5: 0, 10: 0, 15: 0, 20: 0, 25: 0}
    assert sorted(moves) == [("c", 0), ("d", 0)]
    assert sorted(w.level for w in h.registry.registered()) == [0, 0, 0, 0]


async def test_a_solve_failing_every_window_logs_one_traceback(monkeypatch, caplog):
    """A tick with nothing to solve ended the run of failures, so a solver that failed at every window was logged with
    its traceback at every window, each followed by 'works again after 1 failed'. A window's failed plan is now tried
    again at the next ticks: one run of failures all the same, one traceback and one line that ends it."""
    policy = argus_policy()
    solve = policy.allocator

    def broken(*args):
        raise RuntimeError("the MILP process is gone")

    h = Harness()
    h.add_worker("a", level=0)
    controller = Controller(policy, ControllerConfig(window_s=3.0, min_observe_s=0.6), h.clock.now)
    loop = ControlLoop(policy, controller, h.registry, lambda w, k: None, h.metrics, h.clock, 3.0)
    start = h.clock.now

    async def sleep(delay):  # each tick 0.3 s: the first plan solves, the next three windows fail, then it solves
        h.clock.now += delay
        policy.allocator = broken if h.clock.now - start < 11.0 else solve
        if h.clock.now - start >= 15.0:
            raise asyncio.CancelledError

    monkeypatch.setattr(asyncio, "sleep", sleep)
    with caplog.at_level(logging.DEBUG, logger="argus.controller"), pytest.raises(asyncio.CancelledError):
        await loop.run()
    failures = [r.levelno for r in caplog.records if r.getMessage() == "re-planning failed"]
    # a window's failed plan is tried again at the next ticks (controller/window.py), each failing too
    assert len(failures) > 3 and failures == [logging.ERROR] + [logging.DEBUG] * (len(failures) - 1)
    works = [m for m in caplog.messages if "works again" in m]
    assert works == [f"re-planning works again after {len(failures)} failed in a row"]


async def test_new_routes_between_windows_do_not_end_a_run_of_fallbacks(monkeypatch, caplog):
    """With the MILP falling back at every window, the route-planner LP between windows (the demand moved) solved:
    taken as the solver's success, it logged 'the solver makes plans again' and the next window warned again."""
    policy = argus_policy()
    policy.options = SolverOptions(mip_solver="NO_SUCH_SOLVER")
    h = Harness()
    h.add_worker("a", level=0), h.add_worker("b", level=0)
    controller = Controller(policy, ControllerConfig(window_s=3.0, min_observe_s=0.6), h.clock.now)
    loop = ControlLoop(policy, controller, h.registry, lambda w, k: None, h.metrics, h.clock, 3.0)
    classes = itertools.cycle([0, 25])

    async def sleep(delay):  # each tick 0.3 s, with arrivals of one class and then another: the demand keeps moving
        h.clock.now += delay
        for _ in range(3):
            controller.observe_arrival(next(classes))
        if h.clock.now - start >= 12.0:
            raise asyncio.CancelledError

    start = h.clock.now
    monkeypatch.setattr(asyncio, "sleep", sleep)
    with caplog.at_level(logging.INFO, logger="argus.controller"), pytest.raises(asyncio.CancelledError):
        await loop.run()
    sample = h.metrics.registry.get_sample_value
    assert sample("argus_plans_total", {"status": "fallback"}) >= 4  # a fallback at each window
    assert sample("argus_plans_total", {"status": "optimal"}) >= 1  # new routes between them
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "fallback" in warned[0]
    assert not [m for m in caplog.messages if "makes plans again" in m]


async def test_a_milp_process_that_does_not_answer_is_one_line_in_the_log(monkeypatch, caplog):
    """Its error says what happened and to which process; logged with the engine's stack above it, it was a traceback
    of ten lines through the window and the policy."""
    policy = argus_policy()
    policy.options = SolverOptions(time_limit_ms=100)
    milp = MilpProcess(answer_margin_s=0.5)
    policy.allocator = milp.allocate
    h, controller, loop = planning_every_tick(policy, "a")
    try:
        await ticks(loop, monkeypatch, 1, h.clock)
        (pid,) = milp_processes_of(os.getpid())
        os.kill(pid, signal.SIGSTOP)
        with caplog.at_level(logging.DEBUG, logger="argus.controller"):
            await ticks(loop, monkeypatch, 1, h.clock)
    finally:
        milp.close()
    (failed,) = [r for r in caplog.records if r.getMessage().startswith("re-planning failed")]
    assert failed.levelno == logging.ERROR and not failed.exc_info
    said = f"re-planning failed: the MILP process did not answer in 1 s (pid {pid}, exit code -9)"
    assert failed.getMessage() == said


async def test_a_fleet_changed_while_the_milp_fails_is_planned_where_its_workers_are(monkeypatch):
    """A MILP process that died or stalled failed the solve, and the plan in force was kept: planned for workers gone
    since, it routed class 25 to a level 25 whose one worker had died, for as long as the MILP process failed (one
    that the OOM killer takes at each solve, for ever). The plan now follows the fleet in the meantime: the workers
    where they are, with the route-planner LP's routes, status fallback; the MILP is tried again at the next look. (At
    an SLO where level 0 makes no image in time, so that a plan of no demand keeps the worker at 25 where it is.)"""
    policy = argus_policy()
    solve = policy.allocator
    h, controller, loop = planning_every_tick(policy, "a", "b", slo_s=10.0)
    h.add_worker("c", level=25)
    await ticks(loop, monkeypatch, 1, h.clock)
    assert dict(controller.plan.workers_per_level) == {0: 2, 5: 0, 10: 0, 15: 0, 20: 0, 25: 1}
    assert controller.plan.redirect[25] == {25: 1.0}

    def stalled(*args):
        raise MilpProcessError("the MILP process did not answer in 6 s (pid 1, exit code -9)")

    policy.allocator = stalled
    h.dispatcher.worker_lost(h.registry.by_worker_id("c")[0], "exited")
    await ticks(loop, monkeypatch, 1, h.clock)
    plan = controller.plan
    assert (plan.workers, plan.status) == (2, "fallback")
    assert all(plan.workers_per_level[level] for row in plan.redirect.values() for level in row)
    assert h.metrics.registry.get_sample_value("argus_plan_workers", {"level": "25"}) == 0
    policy.allocator = solve  # the MILP answers again: its plan replaces the fallback at the next look
    await ticks(loop, monkeypatch, 1, h.clock)
    assert controller.plan.status == "optimal"


async def test_a_plan_without_the_solver_that_fails_too_is_one_traceback_a_run_of_failures(monkeypatch, caplog):
    """As a failed solve: each tick of a run of failures printed the same traceback at ERROR."""
    policy = argus_policy()
    h, controller, loop = planning_every_tick(policy, "a", "b")
    h.add_worker("c", level=25)
    await ticks(loop, monkeypatch, 1, h.clock)

    def stalled(*args):
        raise MilpProcessError("the MILP process did not answer in 6 s (pid 1, exit code -9)")

    def fails(inputs):
        raise RuntimeError("no route")

    policy.allocator = stalled
    monkeypatch.setattr(policy, "plan_without_solver", fails)
    h.dispatcher.worker_lost(h.registry.by_worker_id("c")[0], "exited")
    with caplog.at_level(logging.DEBUG, logger="argus.controller"):
        await ticks(loop, monkeypatch, 4, h.clock)
    failures = [r for r in caplog.records if r.getMessage() == "planning without the solver failed"]
    assert [r.levelno for r in failures] == [logging.ERROR] + [logging.DEBUG] * 3
    assert all(r.exc_info for r in failures)
