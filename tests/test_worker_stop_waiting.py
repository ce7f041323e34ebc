"""A worker stopped (Ctrl-C, SIGTERM) as it waits ends at once, alone or in a fleet. One that no engine answered saw
the stop only as its wait for the hello's answer ended (a second), a fleet at its next timer, a welcomed worker with
no work at its next heartbeat. Here those waits are ten minutes long: a stop seen only at their end fails the test,
however loaded the machine."""

import signal
import threading

import pytest
from fake_engine import FakeEngine
from waiting import wait_for
from worker_in_process import HeldFirstRun, worker_runtime

from protocols.worker_messages import PROTOCOL_VERSION, Heartbeat, Hello, Welcome
from workers import main
from workers.fleet import Fleet
from workers.runtime import WorkerRuntime

FOR_EVER_S = 600.0
NO_ENGINE = "tcp://127.0.0.1:1"


def served_on_a_thread(serve) -> threading.Thread:
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def ended(thread: threading.Thread) -> bool:
    return wait_for(lambda: not thread.is_alive())


def test_a_worker_stopped_as_it_waits_for_its_hellos_answer_ends_at_once():
    with worker_runtime(hello_retry_s=FOR_EVER_S) as served:
        served.engine.receive(Hello)  # unanswered: it waits for the answer now
        served.runtime.stop()
        assert ended(served.thread)


def test_a_welcomed_worker_stopped_as_it_waits_for_work_ends_at_once():
    with worker_runtime() as served:
        served.engine.receive(Hello)
        served.engine.send(
            Welcome(PROTOCOL_VERSION, heartbeat_interval_s=FOR_EVER_S, engine_timeout_s=2 * FOR_EVER_S, level=0)
        )
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


def test_a_fleet_stopped_as_its_workers_wait_for_their_hellos_answers_ends_at_once():
    fleet = Fleet(NO_ENGINE, 2, "unanswered", time_scale=0.0, max_batch=None, curve=None)
    for worker in fleet._workers:
        worker._hello_retry_s = FOR_EVER_S
    # stopped once its loop waits (for the earliest timer, each worker's next hello): a stop that came before its
    # loop first looked found the fleet stopping however long that wait
    waiting = threading.Event()
    select = fleet._selector.select
    fleet._selector.select = lambda timeout: waiting.set() or select(timeout)
    thread = served_on_a_thread(fleet.serve)
    assert waiting.wait(30)
    fleet.stop()
    assert ended(thread)
