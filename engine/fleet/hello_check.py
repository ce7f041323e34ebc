"""What the engine takes from a worker's hello, checked before the worker joins.

Its values size what clients may ask for (the smallest max_size of the ready
workers bounds every request), shape batches, and are shown in /ready and the
log. A buggy or hostile worker must not shrink every request to nothing, nor
make /ready megabytes long: a hello out of bounds is refused, naming the field.
"""

from __future__ import annotations

import math

from protocols.limits import MAX_BATCH, MAX_IMAGE_SIZE, MAX_STEPS, SIZE_MULTIPLE
from protocols.worker_messages import PROTOCOL_VERSION, Hello, Probe
from workers.limits import BACKEND_SIZES, DEFAULT_LEVELS
from workers.runtime import MAX_WORKER_ID_BYTES, worker_id_problem

# backend and device names: "sdxl", "cuda:0"
MAX_NAME_CHARS = 64


def protocol_refusal(protocol: int) -> str | None:
    """Why a worker speaking `protocol` cannot join, or None."""
    if protocol != PROTOCOL_VERSION:
        return f"protocol {protocol} not supported (engine speaks {PROTOCOL_VERSION})"
    return None


def hello_refusal(hello: Hello, backend: str, model: str | None, named_by: str = "") -> str | None:
    """Why a worker cannot join an engine serving `backend` and `model` (None: any, the first welcomed names it),
    or None. `named_by` says where the engine's model came from."""
    if refused := identity_refusal(hello, backend, model, named_by):
        return refused
    if not hello.model:
        return f"model must be 1 to {MAX_NAME_CHARS} printable characters"
    if not hello.device.isprintable() or not 0 < len(hello.device) <= MAX_NAME_CHARS:
        return f"device must be 1 to {MAX_NAME_CHARS} printable characters"
    if not 1 <= hello.max_batch <= MAX_BATCH:
        return f"max_batch {hello.max_batch} outside 1..{MAX_BATCH}"
    if not 1 <= hello.default_steps <= MAX_STEPS:
        return f"default_steps {hello.default_steps} outside 1..{MAX_STEPS}"
    sizes = (hello.min_size, hello.default_size, hello.max_size)
    if (
        any(size % SIZE_MULTIPLE for size in sizes)
        or not SIZE_MULTIPLE <= sizes[0] <= sizes[1] <= sizes[2] <= MAX_IMAGE_SIZE
    ):
        return (
            f"min_size {sizes[0]}, default_size {sizes[1]}, max_size {sizes[2]}: multiples of {SIZE_MULTIPLE},"
            f" in that order, from {SIZE_MULTIPLE} to {MAX_IMAGE_SIZE}"
        )
    # requests may take only the sizes every ready worker takes: one worker without the backend's default (8 to 8,
    # within every bound above) left none to the others, and had every request refused. Each taking it, it is
    # always one
    usual = BACKEND_SIZES[backend].default_size
    if not sizes[0] <= usual <= sizes[2]:
        return f"min_size {sizes[0]}, max_size {sizes[2]}: not taking {usual}, the {backend} backend's default size"
    # the engine's cache keeps these levels only (server.py): a latent at another would fail every image's insert
    levels = hello.levels
    if not levels or levels != sorted(set(levels)) or not set(levels) <= set(DEFAULT_LEVELS):
        shown = levels[: len(DEFAULT_LEVELS) + 1]
        return f"levels {shown}: not some of the engine's cache levels {list(DEFAULT_LEVELS)}, ascending"
    if levels[-1] >= hello.default_steps:
        return f"levels {levels}: not all below default_steps {hello.default_steps}"
    if not 0 <= hello.level < hello.default_steps:
        return f"level {hello.level} outside 0..{hello.default_steps - 1} (below default_steps)"
    refused = hello.refused_steps
    if refused != sorted(set(refused)) or not all(1 <= n <= MAX_STEPS for n in refused):
        return f"refused_steps {refused[:8]}: not step counts from 1 to {MAX_STEPS}, ascending"
    if hello.default_steps in refused:
        # every request that names no steps would be refused
        return f"refused_steps holds default_steps {hello.default_steps}"
    if not (0 <= hello.time_scale < math.inf):
        # what no worker's --time-scale can be (0 can: a sim worker that takes no time). NaN, never equal to itself,
        # was a scale not yet warned of at every hello, a warning line each
        return f"time_scale {hello.time_scale}: not a finite number >= 0"
    return None


def name_refusal(identity: bytes) -> str | None:
    """Why a peer's ZeroMQ identity cannot be its worker's name, or None. The name is in each of the engine's lines of
    the worker and each image's `worker`, and a peer sets its identity apart from its hello's worker id (checked by
    identity_refusal): a newline in it began a line of the peer's own in the engine's log. A worker of this build is
    named `{worker id}/{8 hex digits}`."""
    try:
        name = identity.decode()
    except UnicodeDecodeError:
        return "its identity (the worker's name) is not UTF-8"
    if not name.isprintable():
        return "its identity (the worker's name) holds characters that are not printable"
    return None


def identity_refusal(sent: Hello | Probe, backend: str, model: str | None, named_by: str = "") -> str | None:
    """Why a worker cannot join for what a Probe (asked before it loads its model) and a Hello both say: the
    protocol, the worker id, the backend and model it runs ("" in a Probe: known only once loaded); or None.
    hello_refusal's arguments."""
    if refused := protocol_refusal(sent.protocol):
        return refused
    if sent.backend != backend:
        # one model on every worker: the cache holds one model's latents, and another model's worker sent them
        # would fail every image resumed from one (or, of the same shape, start from latents it never made)
        return f"backend {sent.backend[:MAX_NAME_CHARS]!r}: this engine serves {backend!r} (argus serve --backend)"
    if problem := worker_id_problem(sent.worker_id):
        return f"worker_id: {problem}"
    if len(sent.worker_id.encode()) > MAX_WORKER_ID_BYTES:
        return f"worker_id must be at most {MAX_WORKER_ID_BYTES} bytes"
    if not sent.model:
        return None
    if not sent.model.isprintable() or len(sent.model) > MAX_NAME_CHARS:
        return f"model must be 1 to {MAX_NAME_CHARS} printable characters"
    if model is not None and sent.model != model:
        # the same backend, another model (another checkpoint, a fine-tune): the cache would feed each the
        # other's latents, and the images would be wrong with no error
        return f"model {sent.model!r}: this engine serves {model!r} ({named_by}); every worker must run one model"
    return None
