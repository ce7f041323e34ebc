"""The log line of each batch a worker failed or refused, a worker's failed ones said at most once every
FAILED_LINE_EVERY_S. A worker that fails every batch answers at once, and is taken out of rotation
(engine/dispatch/failing_workers.py) only while others serve: the only worker, or one of a fleet half out already, went
on failing batches as fast as requests came, a WARNING each (70 lines in 2 s). The first is said at once; the next says
how many were left out. A batch refused is the batch's fault, not the worker's, and each such line names the requests it
refused."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from engine.logs.plurals import counted
from engine.logs.quiet_lines import QuietLines
from engine.logs.request_names import failed_batch_line
from protocols.worker_messages import REFUSED, ItemFailed

log = logging.getLogger("argus.dispatcher")

FAILED_LINE_EVERY_S = 10.0


class FailedBatchLines:
    def __init__(self, clock: Callable[[], float]):
        self._failed = QuietLines(FAILED_LINE_EVERY_S, clock)  # one a worker

    def say(self, worker: str, batch_id: int, batch_size: int, failures: Sequence[tuple[str, ItemFailed]]) -> None:
        """Says the batch's failures (each failed image's request id, and its outcome), one line for all of them."""
        refused = all(failed.code == REFUSED for _, failed in failures)
        left_out = 0 if refused else self._failed.due(worker)
        if left_out is None:
            return
        more = (
            f" ({counted(left_out, 'more batch', 'more batches')} failed since its last such line)" if left_out else ""
        )
        log.warning("%s%s", failed_batch_line(worker, batch_id, batch_size, failures), more)
