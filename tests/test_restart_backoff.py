"""A worker that says hello and dies at once, every time (a CUDA fault, an OOM kill or a bad driver on its first
batch), is started again with a doubling wait, not about every second for ever; one that served a stable period
and then died is started again after the initial wait."""

import asyncio
import logging

import pytest
from fake_clock import Clock
from waiting import eventually

from engine.config import LaunchConfig
from engine.fleet.launcher import LocalLauncher
from engine.fleet.restart_backoff import GIVE_UP_AFTER, RestartBackoff
from engine.server import Engine
from engine_process import in_process_config, stop_in_process


@pytest.fixture
def hellos(monkeypatch) -> list[str]:
    """Every local worker is killed at its hello: the ids of those that said it."""
    said = []
    said_hello = LocalLauncher.joined

    def dies_at_its_hello(launcher: LocalLauncher, worker_id: str) -> None:
        said_hello(launcher, worker_id)
        said.append(worker_id)
        launcher.kill(worker_id)

    monkeypatch.setattr(LocalLauncher, "joined", dies_at_its_hello)
    return said


async def test_a_worker_that_dies_right_after_each_hello_backs_off(hellos, tmp_path, caplog):
    """Before, each hello reset the wait to 1 s: 8 restarts in 15 s (a sim worker starts in about 0.8 s). The waits
    now double, 1, 2, 4 s, however fast a worker starts: read from the restart lines, not counted in a window of time,
    which a slow start on a loaded machine could leave with too few."""
    caplog.set_level(logging.INFO, "argus.launcher")
    engine = Engine(in_process_config(tmp_path, launch=LaunchConfig(count=1, backend="sim", time_scale=0)))
    running = asyncio.create_task(engine.run())
    killed = "was killed by the engine (why is above); restarting"

    def waits_said() -> list[str]:
        return [m.partition(killed)[2].partition(" (")[0] for m in caplog.messages if killed in m]

    try:
        assert await eventually(lambda: len(waits_said()) >= 3, timeout_s=120), waits_said()
        assert waits_said()[:3] == ["", " in 2 s", " in 4 s"]  # the first wait, 1 s, is not said
    finally:
        await stop_in_process(engine, running)


async def test_a_slot_waiting_out_its_backoff_is_counted_restarting(hellos, tmp_path):
    """It was in no state of argus_workers while it waited (up to 30 s at a time in a crash loop): a dashboard
    summing them saw the slot gone."""
    engine = Engine(in_process_config(tmp_path, launch=LaunchConfig(count=1, backend="sim", time_scale=0)))
    running = asyncio.create_task(engine.run())

    def restarting() -> float:
        return engine.metrics.registry.get_sample_value("argus_workers", {"state": "restarting"}) or 0.0

    try:
        assert await eventually(lambda: hellos, timeout_s=60), "the worker never said hello"
        assert await eventually(lambda: restarting() == 1, timeout_s=30)
        assert await eventually(lambda: restarting() == 0, timeout_s=30)  # started again
    finally:
        await stop_in_process(engine, running)


def test_the_wait_doubles_while_workers_die_soon_after_their_hello_and_is_reset_after_a_stable_period():
    clock = Clock()
    backoff = RestartBackoff(1.0, 30.0, clock)
    waits = []
    for _ in range(7):  # each one says hello and dies 5 s later
        backoff.joined()
        clock.now += 5.0
        waits.append(backoff.after_exit())
    assert waits == [1, 2, 4, 8, 16, 30, 30]
    backoff.joined()
    clock.now += 30.0  # it served the stable period: killed then, it is started again as a first time
    assert [backoff.after_exit(), backoff.after_exit()] == [1, 2]  # the second: it died before its hello


def test_a_worker_that_says_hello_again_is_stable_from_its_first_hello():
    """A worker says hello again, in the same process, when it heard nothing from the engine for its timeout (an engine
    paused past it): the engine registers it anew, and its launcher is told it joined. Before, that hello started its
    stable period over, and a worker that had served for minutes and then died within 30 s of it was started again
    after the grown wait of the crashes before it."""
    clock = Clock()
    backoff = RestartBackoff(1.0, 30.0, clock)
    for _ in range(5):  # a crash loop: the wait grows to 30 s
        backoff.joined()
        clock.now += 5.0
        backoff.after_exit()
    backoff.joined()
    clock.now += 600.0  # this one serves ten minutes
    backoff.joined()  # and says hello again
    clock.now += 10.0
    assert backoff.after_exit() == 1


def test_the_restart_line_says_the_wait_only_once_it_grew():
    backoff = RestartBackoff(1.0, 30.0, Clock())
    assert backoff.said(backoff.after_exit()) == ""
    assert backoff.said(backoff.after_exit()).startswith(" in 2 s")


def test_a_slot_is_given_up_only_after_starts_in_a_row_that_could_not_serve_before_their_hello():
    backoff = RestartBackoff(1.0, 30.0, clock=lambda: 0.0)

    def ends(cannot_serve: bool, said_hello: bool = False) -> bool:
        if said_hello:
            backoff.joined()
        gives_up = backoff.gives_up(cannot_serve)
        backoff.after_exit()
        return gives_up

    assert [ends(True) for _ in range(GIVE_UP_AFTER - 1)] == [False] * (GIVE_UP_AFTER - 1)
    assert not ends(False)  # a crash of another kind breaks the streak
    assert not any(ends(True) for _ in range(GIVE_UP_AFTER - 1))
    assert not ends(True, said_hello=True)  # it could serve once: what ended it may pass
    assert [ends(True) for _ in range(GIVE_UP_AFTER)] == [False] * (GIVE_UP_AFTER - 1) + [True]


def test_a_slot_is_given_up_at_the_third_start_in_a_row_that_could_not_serve_as_the_docs_say():
    """docs/reliability.md and the argus_workers{state="failed"} help say 3: each start reloads the model (minutes for
    SD-XL), so one more is not free."""
    backoff = RestartBackoff(1.0, 30.0, clock=lambda: 0.0)
    assert [backoff.gives_up(cannot_serve=True) for _ in range(3)] == [False, False, True]


def test_a_slot_given_up_is_started_again_at_the_long_wait_until_a_start_ends_otherwise():
    """Before, a slot given up was never started again: its cause fixed (a model folder put back), it stayed empty
    until the engine's restart. Given up, it waits given_up_retry_s between starts; a hello, or an end of another
    kind, takes it back to the quick restarts, whose doubling it left where it was."""
    backoff = RestartBackoff(1.0, 30.0, clock=lambda: 0.0, given_up_retry_s=300.0)
    waits = []
    for _ in range(GIVE_UP_AFTER + 2):
        backoff.gives_up(cannot_serve=True)
        waits.append(backoff.after_exit())
    assert waits == [1, 2, 300, 300, 300]
    assert backoff.given_up
    assert backoff.said(300) == " in 300 s (given up: it still cannot serve as configured)"
    assert not backoff.gives_up(cannot_serve=False)  # it hung, or crashed: what ended it may pass
    assert backoff.after_exit() == 4
    for _ in range(GIVE_UP_AFTER):
        backoff.gives_up(cannot_serve=True)
        backoff.after_exit()
    backoff.joined()  # its cause was fixed
    assert not backoff.given_up
