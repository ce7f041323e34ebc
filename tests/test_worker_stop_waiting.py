"""A worker stopped (Ctrl-C, SIGTERM) as it waits ends at once, alone or in a fleet. One that no engine answered saw
the stop only as its wait for the hello's answer ended (a second), a fleet at its next timer, a welcomed worker with
no work at its next heartbeat; and one that no engine answered then waited half a second more for its hellos to
reach an engine that was not there (its socket's linger). Here those waits are ten minutes long: a stop seen only at
their end fails the test, however loaded the machine."""

import logging
import signal
import threading

import pytest
from fake_engine import FakeEngine
from waiting import wait_for
from worker_in_process import HeldFirstRun, serving, welcome, worker_runtime

from protocols.worker_messages import Heartbeat, Hello
from workers import main
from workers import runtime as runtime_module
from workers.fleet import Fleet
from workers.runtime import WorkerRuntime

FOR_EVER_S = 600.0
NO_ENGINE = "tcp://127.0.0.1:1"
UNANSWERED = "no answer from an engine"


def ended(thread: threading.Thread) -> bool:
    return wait_for(lambda: not thread.is_alive())


def test_a_worker_stopped_as_it_waits_for_its_hellos_answer_ends_at_once():
    with worker_runtime(hello_retry_s=FOR_EVER_S) as served:
        served.engine.receive(Hello)  # unanswered: it waits for the answer now
        served.runtime.stop()
        assert ended(served.thread)


def test_a_welcomed_worker_stopped_as_it_waits_for_work_ends_at_once():
    with worker_runtime() as served:
        welcome(served.engine, engine_timeout_s=2 * FOR_EVER_S, heartbeat_interval_s=FOR_EVER_S)
        served.engine.receive(Heartbeat)  # its first, at once: the next is due in ten minutes
        served.runtime.stop()
        assert ended(served.thread)


@pytest.mark.timeout(60)  # what ends it if the signal is seen only as the wait ends
def test_its_stop_signal_ends_its_wait_for_its_hellos_answer_at_once():
    """As a signal is delivered: it cuts the wait short, its handler runs, and the wait goes on for what is left of it
    (pyzmq's poll, on EINTR) unless the handler has woken it."""
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the worker's stop signal (one started by hand)
    engine = FakeEngine()
    runtime = WorkerRuntime(HeldFirstRun(), engine.address, "signalled", hello_retry_s=FOR_EVER_S)

    def stop_once_it_waits():
        engine.receive(Hello)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

    threading.Thread(target=stop_once_it_waits, daemon=True).start()
    try:
        assert main.serve_until_stopped(runtime) == 0  # the handler's to catch, set before the hello is said
    finally:
        engine.close()
        for signum, handler in kept.items():
            signal.signal(signum, handler)


def test_a_worker_stopped_ends_without_waiting_for_its_hellos_to_reach_no_engine(monkeypatch, caplog):
    monkeypatch.setattr(runtime_module, "LINGER_MS", int(FOR_EVER_S * 1000))
    monkeypatch.setattr(runtime_module, "UNANSWERED_WARNING_S", 0.0)
    runtime = WorkerRuntime(HeldFirstRun(), NO_ENGINE, "unanswered", hello_retry_s=0.01)
    with serving(runtime.serve, runtime.stop) as (thread, _):
        with caplog.at_level(logging.WARNING, logger="argus"):
            assert wait_for(lambda: UNANSWERED in caplog.text)  # a hello waits to go, for no engine
        runtime.stop()
        assert ended(thread)


def test_a_fleet_stopped_as_its_workers_wait_for_their_hellos_answers_ends_at_once():
    fleet = Fleet(NO_ENGINE, 2, "unanswered", time_scale=0.0, max_batch=None, curve=None)
    for worker in fleet.workers:
        worker._hello_retry_s = FOR_EVER_S
    # stopped once its loop waits (for the earliest timer, each worker's next hello): a stop that came before its
    # loop first looked found the fleet stopping however long that wait
    waiting = threading.Event()
    select = fleet._selector.select
    fleet._selector.select = lambda timeout: waiting.set() or select(timeout)
    with serving(fleet.serve, fleet.stop) as (thread, _):
        assert waiting.wait(30)
        fleet.stop()
        assert ended(thread)


def test_a_fleet_stopped_ends_without_waiting_for_what_its_workers_said_to_reach_no_engine(monkeypatch):
    """Each worker says its hello, and then that it is leaving, to no engine."""
    monkeypatch.setattr(runtime_module, "LINGER_MS", int(FOR_EVER_S * 1000))
    fleet = Fleet(NO_ENGINE, 2, "unanswered", time_scale=0.0, max_batch=None, curve=None)
    fleet.stop()
    with serving(fleet.serve, fleet.stop) as (thread, _):
        assert ended(thread)
