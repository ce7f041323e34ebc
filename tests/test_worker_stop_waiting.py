"""A worker stopped (Ctrl-C, SIGTERM) as it waits ends at once, alone or in a fleet. One that no engine answered saw
the stop only as its wait for the hello's answer ended (a second), a fleet at its next timer, a welcomed worker with
no work at its next heartbeat; and one that no engine answered then waited half a second more for its hellos to
reach an engine that was not there (its socket's linger). Here those waits are ten minutes long: a stop seen only at
their end fails the test, however loaded the machine. A stop signal ends them wherever it lands: sent to another
thread as the main one waits in its poll, it was seen only as that ended (as one that lands on the main thread just
before its poll: 9 stops in 4,000, the worker pinned to one loaded core)."""

import contextlib
import linecache
import logging
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from fake_engine import FakeEngine
from waiting import wait_for
from worker_in_process import HeldFirstRun, serving, welcome, worker_runtime

from protocols.worker_messages import Heartbeat, Hello
from workers import main
from workers import runtime as runtime_module
from workers.fleet import Fleet
from workers.runtime import WorkerRuntime
from workers.wakeup import Wakeup

FOR_EVER_S = 600.0
NO_ENGINE = "tcp://127.0.0.1:1"
UNANSWERED = "no answer from an engine"
ON_MAIN = "on its main thread"
LANDS_ON = [ON_MAIN, "on another thread"]


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


def in_the_poll_of(thread: threading.Thread, wait: Callable) -> bool:
    """Whether `thread` is inside the poll that the function `wait` makes. pyzmq's poll and the selector's let go of
    the GIL there, past the last point where Python runs a signal's handler before the poll blocks: so this thread,
    holding the GIL, can look, and a handler left to run then runs only as that poll ends, unless something wakes it."""
    frame = sys._current_frames().get(thread.ident)
    if frame is None or frame.f_code is not wait.__code__:
        return False
    return "poll(" in linecache.getline(frame.f_code.co_filename, frame.f_lineno)


def signal_in_its_poll(wait: Callable, signum: int, lands_on: str) -> None:
    """Sends `signum` once the main thread is inside `wait`'s poll: to the main thread (its poll cut short, then waiting
    again for what is left), or to this one (kill(1) lands on any thread that does not block it, and Python runs the
    handler on the main thread alone, at its next bytecode: a signal landing on the main thread just before its poll
    is the same)."""
    main_thread = threading.main_thread()
    assert wait_for(lambda: in_the_poll_of(main_thread, wait))
    signal.pthread_kill(main_thread.ident if lands_on == ON_MAIN else threading.get_ident(), signum)


def stopped_by_its_signal(runner: main.Serving, wait: Callable, before: Callable[[], object], lands_on: str) -> None:
    """Serves `runner` through serve_until_stopped on this, the main, thread, and on another, once `before()` has
    returned, sends SIGTERM in `wait`'s poll. Fails at the test's timeout if the signal does not end the wait."""
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the worker's stop signal (one started by hand)
    failed = []

    def stop_once_it_waits():
        try:
            before()
            signal_in_its_poll(wait, signal.SIGTERM, lands_on)
        except Exception as exc:  # stopped all the same, and said once it has
            failed.append(exc)
            runner.stop()

    threading.Thread(target=stop_once_it_waits, daemon=True).start()
    try:
        assert main.serve_until_stopped(runner) == 0  # the handler's to catch, set before the hello is said
    finally:
        for signum, handler in kept.items():
            signal.signal(signum, handler)
    assert failed == []


@pytest.mark.timeout(60)  # what ends it if the signal is seen only as the wait ends
@pytest.mark.parametrize("lands_on", LANDS_ON)
def test_its_stop_signal_ends_its_wait_for_its_hellos_answer_at_once(lands_on):
    with FakeEngine() as engine:
        runtime = WorkerRuntime(HeldFirstRun(), engine.address, "signalled", hello_retry_s=FOR_EVER_S)
        stopped_by_its_signal(runtime, WorkerRuntime._wait, lambda: engine.receive(Hello), lands_on)


def no_stop_signal_in_its_poll(wait: Callable, wakeup: Wakeup, handled: threading.Event) -> None:
    """Sends SIGUSR2, handled otherwise, in `wait`'s poll (to another thread), and returns once its handler has run
    and the main thread waits again, its wake-up read."""
    signal_in_its_poll(wait, signal.SIGUSR2, "on another thread")
    assert handled.wait(30)
    main_thread = threading.main_thread()
    assert wait_for(lambda: in_the_poll_of(main_thread, wait) and not select.select([wakeup], [], [], 0)[0])


@contextlib.contextmanager
def another_signal_handled() -> Iterator[threading.Event]:
    """SIGUSR2 handled as a library might: set once its handler has run."""
    handled = threading.Event()
    kept = signal.signal(signal.SIGUSR2, lambda *_: handled.set())
    try:
        yield handled
    finally:
        signal.signal(signal.SIGUSR2, kept)


@pytest.mark.timeout(60)
def test_a_signal_that_is_no_stop_leaves_its_wait_for_its_hellos_answer_as_it_was():
    """A signal that the process handles otherwise wakes its wait too, before its handler has run: it waits on, and
    says its hello neither again nor, left woken, again and again."""
    said = []
    with another_signal_handled() as handled, FakeEngine() as engine:
        runtime = WorkerRuntime(HeldFirstRun(), engine.address, "signalled", hello_retry_s=FOR_EVER_S)
        send = runtime._send
        runtime._send = lambda message: said.append(type(message)) or send(message)

        def hello_then_another_signal() -> None:
            engine.receive(Hello)
            no_stop_signal_in_its_poll(WorkerRuntime._wait, runtime._wakeup, handled)

        stopped_by_its_signal(runtime, WorkerRuntime._wait, hello_then_another_signal, ON_MAIN)
    assert said.count(Hello) == 1


@pytest.mark.timeout(60)
def test_its_stop_signal_handled_as_its_wait_clears_another_signals_wake_up_ends_the_wait(monkeypatch):
    """A signal that is no stop wakes the wait, which clears the wake-up and waits on. A stop signal landing between
    the wait's look at the stop flag and that clear has its handler run as the clear is called: its wake-up was cleared
    with the other's, and the worker, its flag set, waited out its hello's retry (ten minutes here) before stopping."""
    clear, sent = Wakeup.clear, []

    def stop_signal_as_it_clears(wakeup: Wakeup) -> None:
        if not sent:  # the first clear, the other signal's: on the main thread, whose handler runs in pthread_kill
            sent.append(signal.SIGTERM)
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        clear(wakeup)

    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the worker's stop signal, whose handler serve_until_stopped sets
    served, failed = threading.Event(), []
    with another_signal_handled() as handled, FakeEngine() as engine:
        runtime = WorkerRuntime(HeldFirstRun(), engine.address, "signalled", hello_retry_s=FOR_EVER_S)
        monkeypatch.setattr(Wakeup, "clear", stop_signal_as_it_clears)

        def another_signal_in_its_wait() -> None:
            try:
                engine.receive(Hello)
                signal_in_its_poll(WorkerRuntime._wait, signal.SIGUSR2, "on another thread")
                assert handled.wait(30)
                assert wait_for(served.is_set), "its stop was seen only as its wait ended"
            except Exception as exc:  # stopped all the same, and said once it has
                failed.append(exc)
                runtime.stop()

        threading.Thread(target=another_signal_in_its_wait, daemon=True).start()
        try:
            assert main.serve_until_stopped(runtime) == 0
            served.set()
        finally:
            for signum, handler in kept.items():
                signal.signal(signum, handler)
    assert sent == [signal.SIGTERM] and failed == []


@pytest.mark.timeout(60)
def test_a_signal_that_is_no_stop_leaves_a_fleet_waiting_as_it_was():
    """Left woken, its loop went round and round, a core's worth, until it was stopped."""
    with another_signal_handled() as handled, FakeEngine() as engine:
        fleet = Fleet(engine.address, 2, "signalled", time_scale=0.0, max_batch=None, curve=None)
        for worker in fleet.workers:
            worker._hello_retry_s = FOR_EVER_S
        wait = type(fleet._selector).select

        def hellos_then_another_signal() -> None:
            for _ in fleet.workers:
                engine.receive(Hello)
            no_stop_signal_in_its_poll(wait, fleet._wakeup, handled)

        stopped_by_its_signal(fleet, wait, hellos_then_another_signal, ON_MAIN)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lands_on", LANDS_ON)
def test_its_stop_signal_ends_a_fleets_wait_for_its_hellos_answers_at_once(lands_on):
    with FakeEngine() as engine:
        fleet = Fleet(engine.address, 2, "signalled", time_scale=0.0, max_batch=None, curve=None)
        for worker in fleet.workers:
            worker._hello_retry_s = FOR_EVER_S

        def hellos() -> None:
            for _ in fleet.workers:
                engine.receive(Hello)

        stopped_by_its_signal(fleet, type(fleet._selector).select, hellos, lands_on)


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
