"""The count a fleet's no-answer warning gives (workers/fleet.py), on a fleet in this process whose engine address
answers nothing."""

import logging
import time

from workers.fleet import Fleet
from workers.runtime import UNANSWERED_WARNING_S


def test_the_warning_counts_every_worker_waiting_past_a_heartbeat_not_only_those_waiting_its_10_s(caplog):
    """A stopping engine's Shutdown reached a fleet's two workers a moment apart on a loaded machine: warned of when
    the first had waited 10 s, the second, 10 ms short of it, was not counted ("1 of this fleet's 2 workers"); one
    that said hello a moment ago, its answer not due yet, is not counted."""
    fleet = Fleet("tcp://127.0.0.1:1", 3, "unanswered", time_scale=0.0, max_batch=None, curve=None)
    try:
        first, second, just_now = fleet._workers
        now = time.monotonic()
        for worker, waited_s in ((first, UNANSWERED_WARNING_S), (second, UNANSWERED_WARNING_S - 0.01), (just_now, 0)):
            worker.unwelcomed_since = now - waited_s
            worker.engine_stopped = True
        with caplog.at_level(logging.WARNING, logger="argus"):
            fleet._warn_if_unanswered(set(fleet._workers), now)
        assert "no engine has answered 2 of this fleet's 3 workers since" in caplog.text
    finally:
        for worker in fleet._workers:
            worker.close()
        fleet._context.term()
