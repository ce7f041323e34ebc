"""A sync call ended by an exception that a signal handler raised (SystemExit from a SIGTERM handler that calls
sys.exit, as a pipeline stopped by its supervisor does) is cancelled at the engine, as one ended by Ctrl-C is: the
engine ran it to the end for no one, its reply then dropped as its client was gone."""

import signal
import sys
import threading

import pytest
from waiting import wait_for

from engine.client import ArgusClient
from engine_process import start_engine


def _outcomes(engine) -> tuple[float, float]:
    return tuple(engine.metric("argus_requests_total", outcome=outcome, code="") for outcome in ("cancelled", "ok"))


def test_a_call_ended_by_a_signal_handlers_exception_is_cancelled_at_the_engine(tmp_path):
    engine = start_engine(tmp_path, "--time-scale", "1", backend="sim", workers=1)  # an image takes about 5 s
    caller = threading.get_ident()

    def stop_once_sent():
        assert wait_for(lambda: engine.metric("argus_running_images") + engine.metric("argus_queued_images") >= 1)
        signal.pthread_kill(caller, signal.SIGTERM)

    before = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    stopper = threading.Thread(target=stop_once_sent)
    try:
        with ArgusClient(engine.client_address, timeout_s=120) as client:
            stopper.start()
            with pytest.raises(SystemExit):
                client.generate("stopped by its supervisor", width=1024, height=1024)
            stopper.join()
        assert wait_for(lambda: sum(_outcomes(engine)) >= 1)
        assert _outcomes(engine) == (1, 0)  # was (0, 1): run to the end
    finally:
        signal.signal(signal.SIGTERM, before)
        assert engine.stop() == 0
