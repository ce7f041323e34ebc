"""The engine's log lines about requests and the batches that held them (engine/logs/request_names.py)."""

from engine.logs.request_names import failed_batch_line
from protocols.worker_messages import ItemFailed


def test_a_failed_batch_line_forges_no_line_of_the_log_with_what_the_worker_said():
    """A worker's failure is in its own words (a backend's exception, over several lines), and a line break in them
    began a line of the engine's log written by the worker: here, one that read as the engine's own ERROR."""
    forged = "boom\n2026-12-07 06:00:00,000 ERROR argus.engine[1]: out of memory"
    line = failed_batch_line("w", 7, 1, [("r0", ItemFailed("j0", "worker_error", forged))])
    assert "\n" not in line
    assert line.endswith(r"): boom\n2026-12-07 06:00:00,000 ERROR argus.engine[1]: out of memory")
