"""When a worker whose batches keep failing is taken out of rotation, and when it is given batches again.

A worker that is up and beating but fails every batch it runs (a GPU left in a bad CUDA state, out of memory at every
batch, a broken model folder on one host, a build that answers images of another size) answers at once: idle more
often than the healthy workers, it was routed more of the traffic than they were. One such worker beside one healthy
sim worker failed 90 of 100 requests.

FAILING_AFTER batches in a row that made no image and failed at least one take it out of rotation; a batch that
makes an image resets the count (one whose images were all aborted or left out, or that the worker refused as not its
to run, says nothing either way). Counted by batch, not by image: a batch of 8 failed by one OOM is one failure. Nor
twice for one request: a batch counts only when it failed something not already counted since the worker's last image,
by what the client asked (`Asked`). A request that fails on its own account (out of memory at its size, a prompt that
breaks the backend) is answered 500 `worker_error`, which OpenAI's SDK and many HTTP clients send twice more: its
three failures took a healthy worker out (a local one restarted, minutes of loading for SD-XL). Each worker is judged
on its own: a request counted on one counts on another that fails it too.

The dispatcher then restarts a worker the engine started (its launcher's backoff applies), and routes nothing to one
started by hand for `out_for_s`: OUT_FOR_S, doubled at each take-out in a row up to MAX_OUT_FOR_S (as Envoy ejects a
failing host for longer each time). It then gets batches again on probation: one more failed batch takes it out again,
an image puts it back for good. Never more than half the fleet is out at once. The state is here, on the worker's
handle; the dispatcher does the routing (it drops the worker from its indexes and routes what it queued elsewhere),
and remembers the workers it restarted.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import NamedTuple

from engine.dispatch.jobs import Job
from engine.fleet.registry import WorkerHandle, WorkerRegistry

# small: each failed batch is a request failed; more than one, so one bad request (an item no worker could start)
# between good ones takes no worker out
FAILING_AFTER = 3
OUT_FOR_S = 10.0
MAX_OUT_FOR_S = 300.0
# the most a worker remembers of what its counted batches failed, the latest kept: a retry comes seconds after its
# request, and a worker that makes no image for long (out, then failing on probation) would remember every one
REMEMBERED_ASKS = 64


class Asked(NamedTuple):
    """What the client asked of a failed image: the same for each of its retries (under a new request id), and for
    each image of a request. Not its seed, which the engine draws anew for a retry that names none; nor its level, which
    the engine chooses by what its cache holds then."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance_scale: float
    exact: bool
    output_format: str
    output_compression: int | None


def asked(job: Job) -> Asked:
    spec, request = job.request.spec, job.request
    return Asked(
        spec.prompt,
        job.negative_prompt,
        request.width,
        request.height,
        request.steps,
        spec.guidance_scale,
        spec.exact,
        spec.output_format,
        spec.output_compression,
    )


def judge(worker: WorkerHandle, made: bool, failed: Iterable[Hashable]) -> bool:
    """Counts an answered batch (`made`: it brought an image as asked; `failed`: what was asked of each image it failed,
    `asked`). True when this batch counts as failed and makes FAILING_AFTER in a row. It counts when it failed
    something not counted since the worker's last image: one that failed only what was (a client's retries of a
    request that fails on any worker) says nothing, as one aborted, left out or refused does, and takes no worker out
    (on probation, with its count standing, it took the worker out again for twice as long)."""
    if made:
        worker.failed_batches = 0
        worker.out_for_s = 0.0
        worker.failed_asks.clear()
        return False
    new = [key for key in failed if key not in worker.failed_asks]
    if not new:
        return False
    worker.failed_batches += 1
    worker.failed_asks.update(dict.fromkeys(new))
    while len(worker.failed_asks) > REMEMBERED_ASKS:
        del worker.failed_asks[next(iter(worker.failed_asks))]  # the oldest
    return worker.failed_batches >= FAILING_AFTER


def take_out(worker: WorkerHandle, now: float) -> None:
    """Sets when the worker, taken out of rotation now, is given batches again: twice as late as the last time. Its
    count of failed batches stands, so that back in rotation its next failed batch takes it out again, and the line
    that says so counts every batch counted since its last image (set back to FAILING_AFTER - 1, it said "failed
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
