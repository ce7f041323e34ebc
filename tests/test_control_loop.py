"""The control loop staffs levels as the plan says: the least loaded move, and newcomers are placed too."""

import asyncio
from collections import Counter

from test_dispatcher import Harness
from waiting import eventually

from controller.plan import Plan
from engine.control_loop import ControlLoop


class FixedController:
    """A controller whose plan never changes (no demand shift, no new window)."""

    def __init__(self, workers_per_level: dict[int, int]):
        self.plan = Plan("argus", workers_per_level, {}, {}, 0.0, float("nan"), 0.0, 0.0, "optimal")

    def maybe_replan(self, now: float, workers_alive: int) -> Plan | None:
        return None


class Levels:
    levels = (0, 5, 10, 15, 20, 25)


def control_loop(h: Harness, workers_per_level: dict[int, int], moves: list) -> ControlLoop:
    def move(worker, level):
        moves.append((worker.name, level))
        worker.level = level

    return ControlLoop(Levels(), FixedController(workers_per_level), h.registry, move, h.metrics, h.clock, 1.0)


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
        assert await eventually(lambda: Counter(w.level for w in h.registry.ready()) == {0: 1, 25: 2})
        assert moves == [("d", 0)]
    finally:
        running.cancel()


class FailingController(FixedController):
    """A controller with a plan in force whose every new solve fails."""

    def maybe_replan(self, now: float, workers_alive: int) -> Plan | None:
        raise RuntimeError("the solver failed")


async def test_a_failed_solve_still_staffs_the_plan_in_force():
    h = Harness()
    h.add_worker("a", level=0)
    moves = []

    def move(worker, level):
        moves.append((worker.name, level))
        worker.level = level

    loop = ControlLoop(Levels(), FailingController({0: 1, 25: 1}), h.registry, move, h.metrics, h.clock, 1.0)
    running = asyncio.create_task(loop.run())
    try:
        # a worker joins: the controller re-plans for the new fleet, fails, and the plan in force places it
        h.add_worker("b", level=0)
        assert await eventually(lambda: moves)
        assert moves == [("b", 25)]
    finally:
        running.cancel()
