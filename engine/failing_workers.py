"""When a worker whose batches keep failing is taken out of rotation, and when it is given batches again.

A worker that is up and beating but fails every batch it runs (a GPU left in a bad CUDA state, out of memory at every
batch, a broken model folder on one host, a build that answers images of another size) answers at once: idle more
often than the healthy workers, it was routed more of the traffic than they were. One such worker beside one healthy
sim worker failed 90 of 100 requests.

FAILING_AFTER batches in a row that made no image and failed at least one take it out of rotation; a batch that
makes an image resets the count (one whose images were all aborted or left out, or that the worker refused as not its
to run, says nothing either way). Counted by
batch, not by image: a batch of 8 failed by one OOM is one failure. The dispatcher then restarts a worker the engine
started (its launcher's backoff applies), and routes nothing to one started by hand for `out_for_s`: OUT_FOR_S, doubled
at each take-out in a row up to MAX_OUT_FOR_S (as Envoy ejects a failing host for longer each time). It then gets
batches again on probation: one more failed batch takes it out again, an image puts it back for good. Never more
than half the fleet is out at once. The state is here, on the worker's handle; the dispatcher does the routing (it
drops the worker from its indexes and routes what it queued elsewhere), and remembers the workers it restarted.
"""

from __future__ import annotations

from engine.worker_registry import WorkerHandle, WorkerRegistry

# small: each failed batch is a request failed; more than one, so one bad request (an item no worker could start)
# between good ones takes no worker out
FAILING_AFTER = 3
OUT_FOR_S = 10.0
MAX_OUT_FOR_S = 300.0


def judge(worker: WorkerHandle, made: bool, failed: bool) -> bool:
    """Counts an answered batch (`made`: it brought an image as asked; `failed`: an image failed). True when this
    batch failed and makes FAILING_AFTER in a row. One that says nothing (aborted, left out, refused) takes no worker
    out: on probation, with its count standing, it took the worker out again for twice as long."""
    if made:
        worker.failed_batches = 0
        worker.out_for_s = 0.0
    elif failed:
        worker.failed_batches += 1
    return failed and worker.failed_batches >= FAILING_AFTER


def take_out(worker: WorkerHandle, now: float) -> None:
    """Sets when the worker, taken out of rotation now, is given batches again: twice as late as the last time. Its
    count of failed batches stands, so that back in rotation its next failed batch takes it out again, and the line
    that says so counts every batch it failed since its last image (set back to FAILING_AFTER - 1, it said "failed
    3 batches in a row" after each one failed on probation)."""
    worker.out_for_s = min(max(2 * worker.out_for_s, OUT_FOR_S), MAX_OUT_FOR_S)
    worker.back_at = now + worker.out_for_s


def may_take_out(registry: WorkerRegistry, restarting: int) -> bool:
    """Whether one more worker may be taken out of rotation or restarted: never more than half the fleet at once (so
    never the last worker), as requests that fail on any worker, their own fault, would otherwise take every worker
    out in turn, each restart reloading a model for minutes. `restarting`: the workers restarted as failing whose
    slot has not said hello again, counted both out and in the fleet."""
    out = len(registry.taken_out()) + restarting
    return out + 1 <= (len(registry.registered()) + restarting) // 2
