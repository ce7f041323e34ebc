"""Whether a worker can take a request, and whether its answer is what it was asked for: its hello says which sizes
it takes and which step counts its scheduler cannot run, and an image's header says what the image is."""

from __future__ import annotations

from engine.dispatch.jobs import AdmittedRequest, Job
from engine.fleet.registry import WorkerHandle
from protocols.image_header import mismatch
from protocols.worker_messages import ItemDone, ItemFailed, ItemOutcome
from workers.limits import SizeLimits, input_refusal


def refusal(request: AdmittedRequest, worker: WorkerHandle) -> tuple[str, str] | None:
    """The error (code, message) the worker's limits answer the request with, as admission's would; None if none."""
    hello = worker.hello
    return input_refusal(request.width, request.height, request.steps, SizeLimits.of(hello), hello.refused_steps)


def as_asked(worker: WorkerHandle, job: Job, done: ItemDone) -> ItemOutcome:
    """The image, or the worker's failure to make it when its header says it is not the image its batch asked
    for: a worker of another build or model folder, or a buggy backend, may answer any bytes, and the client
    got them as its image. The failure is the one a worker says it had (worker_error, naming what came)."""
    key = job.key
    problem = mismatch(done.image, key.output_format, key.width, key.height)
    if problem is None:
        return done
    return ItemFailed(done.request_id, "unasked_image", f"worker {worker.name} answered {problem}")
