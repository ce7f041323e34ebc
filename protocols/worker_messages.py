"""Messages between the engine and a worker process (ROUTER <-> DEALER).

The worker speaks first (a ROUTER cannot reach a peer it has not heard from):
Hello, answered by Welcome or Refused; one with a model to load may ask first, before
loading it, with a Probe (answered Cleared or Refused) on a connection of its own. After that the engine sends Generate,
SetLevel, Abort, Shutdown and EngineHeartbeat; the worker sends Heartbeat,
LevelSet and, once a batch ends, one BatchDone holding a terminal outcome per
item: ItemDone, ItemFailed or ItemCancelled. Both sides watch the other's heartbeats: the engine drops a
silent worker, and a worker that stops hearing its engine says hello again
(to a restarted engine, or the same one once it answers). An engine that hears
from a worker it does not know (one it dropped as silent, or one welcomed by the
engine before it on this address) answers Rejoin, and the worker says hello at
once rather than after the engine's silence. A worker that is
stopped (SIGTERM) says Leaving before it answers what it gives up, so the
engine routes that elsewhere rather than back to it.
"""

from __future__ import annotations

import msgspec
import numpy as np

from protocols.codec import Blob, Codec
from protocols.limits import OutputCompression

# raised with every change to what a message holds: a worker of another version is refused, both versions named
# (HelloVersion), rather than welcomed to misread or be misread. 4: Hello.model; 5: Generate.output_compression;
# 6: Hello.refused_steps; 7: GenerateItem.negative_prompt; 8: Hello.time_scale; 9: Probe, Cleared;
# 10: Generate.latent_levels
PROTOCOL_VERSION = 10


class Hello(msgspec.Struct, tag="hello", frozen=True):
    protocol: int
    worker_id: str
    backend: str
    # the identity of the model it runs, by content (workers/model_id.py): the engine's cache hands one worker's
    # latents to any other, so every worker of an engine must run the same model
    model: str
    device: str
    simulated: bool
    levels: list[int]  # cache levels K this backend returns latents for
    max_batch: int
    default_steps: int
    min_size: int
    max_size: int
    default_size: int
    level: int  # level the worker serves now
    pid: int
    # counts the times this worker forgot its engine and dropped what it held: a hello repeated within one
    # session (a retry, or retries queued while the engine was down) is not a worker that lost its work
    session: int = 0
    # step counts its model's scheduler cannot run exactly (workers/backend.py BackendInfo): admission refuses them
    refused_steps: list[int] = []
    # a simulated worker's --time-scale (1 for a real model): the engine's controller plans with its own, and warns
    # when they differ
    time_scale: float = 1.0


class HelloVersion(msgspec.Struct, tag="hello", frozen=True):
    """The field every version's Hello keeps: a hello of another version that does not decode as this one's is
    still answered, Refused naming both versions, rather than dropped unheard."""

    protocol: int


class Probe(msgspec.Struct, tag="probe", frozen=True):
    """Asked by a worker before it loads its model (minutes, for SD-XL): would the engine refuse a hello of these
    values? Answered Refused or Cleared; the engine registers nothing. A worker under a live worker's id, of another
    backend or model, learned it only once loaded."""

    protocol: int
    worker_id: str
    backend: str
    model: str  # "" when it is known only once loaded (tiny builds its model): not checked
    pid: int


class Cleared(msgspec.Struct, tag="cleared", frozen=True):
    """Nothing in the Probe is refused now. The hello may still be: for its other values, or an id taken since."""


class Welcome(msgspec.Struct, tag="welcome", frozen=True):
    protocol: int
    heartbeat_interval_s: float
    # a worker that hears nothing from the engine this long says hello again
    engine_timeout_s: float
    level: int


class Refused(msgspec.Struct, tag="refused", frozen=True):
    reason: str
    # only the worker id is refused (a live worker has it): the same hello under another id would be welcomed, so a
    # fleet stops this one worker, not all of them
    id_in_use: bool = False


class Rejoin(msgspec.Struct, tag="rejoin", frozen=True):
    """This engine does not know the worker: what it holds is void, and it must say hello again."""


class Heartbeat(msgspec.Struct, tag="heartbeat", frozen=True):
    level: int
    running_batch: int  # batch id, or -1 when idle


class EngineHeartbeat(msgspec.Struct, tag="engine_heartbeat", frozen=True):
    pass


class SetLevel(msgspec.Struct, tag="set_level", frozen=True):
    level: int


class LevelSet(msgspec.Struct, tag="level_set", frozen=True):
    level: int


class GenerateItem(msgspec.Struct, frozen=True):
    request_id: str
    prompt: str
    seed: int
    # the cached neighbour's latent after `level` steps; None only at level 0
    latent: np.ndarray | None = None
    # that neighbour's similarity to this prompt (what a simulated worker's quality model needs)
    similarity: float | None = None
    # None, or the same for every item of a batch: SD-XL guides a batch by one kind of unconditional embedding,
    # zeros with no negative prompt, the encoded text with one (even "")
    negative_prompt: str | None = None


class Generate(msgspec.Struct, tag="generate", frozen=True):
    """A batch: every item shares level, steps, size, guidance and format, and has a negative prompt or none."""

    batch_id: int
    level: int
    steps: int
    width: int
    height: int
    guidance_scale: float
    output_format: str
    items: list[GenerateItem]
    output_compression: OutputCompression | None = None  # None: the worker's own setting
    # the levels whose latents to bring back, of those the worker caches: the engine's cache levels (none without a
    # cache); None: every one (what the profiling tools, which drive a worker alone, ask for)
    latent_levels: list[int] | None = None


class _ItemId(msgspec.Struct, frozen=True):
    request_id: str


class _GenerateIds(msgspec.Struct, tag="generate", frozen=True):
    """The part of a Generate that a frame of the wrong size, or one too many, leaves readable."""

    batch_id: int
    items: list[_ItemId]


_GENERATE_IDS = msgspec.msgpack.Decoder(_GenerateIds)


def generate_ids(header: memoryview | bytes) -> tuple[int, list[str]] | None:
    """The batch id and request ids of a Generate whose header decodes but whose frames do not, or None: the worker
    answers each item failed, where the engine would wait for them until their deadline, or for ever."""
    try:
        batch = _GENERATE_IDS.decode(header)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return batch.batch_id, [item.request_id for item in batch.items]


class _BatchDoneId(msgspec.Struct, tag="batch_done", frozen=True):
    """The part of a BatchDone that a frame of the wrong size, or a latent of a dtype the wire refuses, leaves
    readable."""

    batch_id: int


_BATCH_DONE_ID = msgspec.msgpack.Decoder(_BatchDoneId)


def batch_done_id(header: memoryview | bytes) -> int | None:
    """The batch id of a BatchDone whose header decodes but whose frames do not, or None: the engine fails the batch's
    images, where it would wait for them until its heartbeat watch took them for lost on the link."""
    try:
        return _BATCH_DONE_ID.decode(header).batch_id
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


class Abort(msgspec.Struct, tag="abort", frozen=True):
    request_ids: list[str]


class Shutdown(msgspec.Struct, tag="shutdown", frozen=True):
    """The engine is stopping. A worker it launched exits; one started by hand waits for the next engine."""


class Leaving(msgspec.Struct, tag="leaving", frozen=True):
    """The worker is stopping: send it nothing more; what it held comes back cancelled, to be routed elsewhere."""


class ItemDone(msgspec.Struct, tag="done", frozen=True):
    request_id: str
    image: Blob  # encoded in the batch's output_format, at its width x height: the engine checks the header
    level: int
    # the latents passed through after each cache level above `level`, stacked
    # [len(latent_levels), C, H, W] so they travel as one frame
    latent_levels: list[int]
    latents: np.ndarray | None
    run_ms: float
    steps_run: int  # denoising steps (UNet evaluations per image) this run took
    quality: float | None = None  # set by simulated backends only

    def by_level(self) -> dict[int, np.ndarray]:
        if self.latents is None:
            return {}
        return dict(zip(self.latent_levels, self.latents, strict=True))

    @property
    def brings_latents(self) -> bool:
        """Names latents or holds some: whether they agree is checked before they are cached."""
        return self.latents is not None or bool(self.latent_levels)


# ItemFailed.code of an item whose batch the worker cannot run as asked (a size, a step count it does not take): the
# batch's fault, not the worker's, which is not counted as failing for it (engine/dispatch/failing_workers.py)
REFUSED = "refused"


class ItemFailed(msgspec.Struct, tag="failed", frozen=True):
    request_id: str
    # REFUSED, or any: the engine answers worker_error whatever it says (engine/dispatch/dispatcher.py, _settle)
    code: str
    message: str


class ItemCancelled(msgspec.Struct, tag="cancelled", frozen=True):
    request_id: str


ItemOutcome = ItemDone | ItemFailed | ItemCancelled


class BatchDone(msgspec.Struct, tag="batch_done", frozen=True):
    """Every item of one batch, answered in one message (one send and one decode per batch, not per image)."""

    batch_id: int
    outcomes: list[ItemOutcome]


ToWorker = Welcome | Refused | Cleared | Rejoin | EngineHeartbeat | Generate | SetLevel | Abort | Shutdown
FromWorker = Hello | Probe | Heartbeat | LevelSet | BatchDone | Leaving


def engine_side_codec() -> Codec:
    """Decodes what workers send; encodes what the engine sends."""
    return Codec(FromWorker)


def worker_side_codec() -> Codec:
    return Codec(ToWorker)
