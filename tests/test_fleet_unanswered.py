"""The count a fleet's no-answer warning gives (workers/fleet.py), on a fleet in this process whose engine address
answers nothing."""

import logging
import time

import pytest

from workers.fleet import Fleet
from workers.runtime import UNANSWERED_WARNING_S


@pytest.fixture
def fleet():
    fleet = Fleet("tcp://127.0.0.1:1", 3, "unanswered", time_scale=0.0, max_batch=None, curve=None)
    yield fleet
    fleet.close()


def warning(fleet: Fleet, caplog, waited_s: list[float]) -> str:
    """What the fleet warns with its workers waiting `waited_s` each, after a stopping engine's Shutdown."""
    now = time.monotonic()
    for worker, waited in zip(fleet.workers, waited_s, strict=True):
        worker.unwelcomed_since = now - waited
        worker.engine_stopped = True
    with caplog.at_level(logging.WARNING, logger="argus"):
        fleet._warn_if_unanswered(set(fleet.workers), now)
    return caplog.text


def test_the_warning_counts_every_worker_waiting_past_a_heartbeat_not_only_those_waiting_its_10_s(fleet, caplog):
    """A stopping engine's Shutdown reached a fleet's two workers a moment apart on a loaded machine: warned of when
    the first had waited 10 s, the second, 10 ms short of it, was not counted ("1 of this fleet's 2 workers"); one
    that said hello a moment ago, its answer not due yet, is not counted."""
    said = warning(fleet, caplog, [UNANSWERED_WARNING_S, UNANSWERED_WARNING_S - 0.01, 0])
    assert "no engine has answered 2 of this fleet's 3 workers since" in said


def test_under_an_engines_heartbeat_interval_longer_than_10_s_the_workers_that_waited_10_s_are_counted(fleet, caplog):
    """A Welcome may give any positive interval: one of 30 s counted no worker at all ("0 of this fleet's 3")."""
    for worker in fleet.workers:
        worker._heartbeat_interval_s = 30.0  # as the last Welcome gave it
    assert "3 of this fleet's 3 workers" in warning(fleet, caplog, [UNANSWERED_WARNING_S] * 3)


def test_the_warning_counts_the_fleets_welcomed_workers_among_its_workers(fleet, caplog):
    fleet.workers[2]._joined = True  # served on: not waiting, yet one of the fleet's workers
    assert "2 of this fleet's 3 workers" in warning(fleet, caplog, [UNANSWERED_WARNING_S] * 3)


def _waiting_but_the_third(fleet, flag: str) -> float:
    """Every worker unanswered for UNANSWERED_WARNING_S, `flag` set on all but the third; returns now."""
    now = time.monotonic()
    for worker in fleet.workers:
        worker.unwelcomed_since = now - UNANSWERED_WARNING_S
        setattr(worker, flag, worker is not fleet.workers[2])
    return now


def test_workers_waiting_since_a_shutdown_and_since_a_silence_are_not_said_to_wait_on_a_stopped_engine(fleet, caplog):
    """Only a wait every worker began at a Shutdown is an orderly stop: one gone silent may be a key refused."""
    now = _waiting_but_the_third(fleet, "engine_stopped")
    with caplog.at_level(logging.WARNING, logger="argus"):
        fleet._warn_if_unanswered(set(fleet.workers), now)
    assert "no answer from an engine" in caplog.text and "stopped" not in caplog.text


def test_workers_whose_engine_went_silent_after_serving_them_are_not_asked_about_their_keys(fleet, caplog):
    """Their engine killed, they were asked whether it took their CURVE keys, which it had until then."""
    now = _waiting_but_the_third(fleet, "served")
    with caplog.at_level(logging.WARNING, logger="argus"):
        fleet._warn_if_unanswered(set(fleet.workers), now)
        assert "no answer from an engine" in caplog.text  # one never welcomed: a key may be why
        caplog.clear()
        fleet.workers[2].served = True
        fleet._warn_if_unanswered(set(fleet.workers), now + 2 * UNANSWERED_WARNING_S)
    assert "went silent (killed, crashed, or cut off from this host), and no engine has answered 3 of" in caplog.text
    assert "CURVE" not in caplog.text


def test_a_second_wait_is_warned_of_at_its_own_10_s(fleet, caplog):
    """The warnings of a wait that ended are not carried on: the next wait's first warning comes at 10 s, not 20."""
    warning(fleet, caplog, [UNANSWERED_WARNING_S] * 3)
    caplog.clear()
    time.sleep(0.01)  # the next wait begins later than the first
    assert "3 of this fleet's 3 workers" in warning(fleet, caplog, [UNANSWERED_WARNING_S] * 3)
