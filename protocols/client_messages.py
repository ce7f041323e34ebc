"""Messages between client programs and the engine's ZeroMQ front door (DEALER <-> ROUTER).

A client sends Generate (or Cancel) with an id of its choosing; the engine
answers each admitted Generate with exactly one terminal message: Images, Error
or Cancelled. Busy is the answer to a request the engine could not admit. A
client that connects again asks after the requests it awaits (Inquire).
"""

from __future__ import annotations

import reprlib
from typing import Annotated

import msgspec

from protocols.codec import Blob, Codec
from protocols.field_errors import choices_of, field_message, param_of
from protocols.limits import (
    MAX_GUIDANCE,
    MAX_IMAGES_PER_REQUEST,
    MAX_INQUIRED_IDS,
    MAX_PROMPT_CHARS,
    MAX_REQUEST_ID_CHARS,
    MAX_SEED,
    MAX_STEPS,
    OutputCompression,
    OutputFormat,
    Prompt,
)

RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_REQUEST_ID_CHARS)]


# a field at its default is left out: an engine made before a field was added refuses it by name (strict decoding), and
# sent at its default it refused every request of a newer client, whatever the request asked
class Generate(msgspec.Struct, tag="generate", frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    request_id: RequestId
    prompt: Prompt
    # what the images should not show (SD-XL's classifier-free guidance steers away from it); "" is none
    negative_prompt: Annotated[str, msgspec.Meta(max_length=MAX_PROMPT_CHARS)] | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=MAX_IMAGES_PER_REQUEST)] = 1
    width: Annotated[int, msgspec.Meta(ge=0)] = 0  # 0: the backend's default
    height: Annotated[int, msgspec.Meta(ge=0)] = 0
    steps: Annotated[int, msgspec.Meta(ge=0, le=MAX_STEPS)] = 0  # 0: the backend's default
    guidance_scale: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_GUIDANCE)] = 5.0
    seed: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEED)] | None = None
    slo_ms: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # every step run with this prompt (level 0), never from a cached neighbour's latent: the image a seed makes
    # whatever the cache holds, at the cost of a full run however loaded the engine is
    exact: bool = False
    output_format: OutputFormat = "png"
    output_compression: OutputCompression | None = None  # None: the worker's own setting


class Cancel(msgspec.Struct, tag="cancel", frozen=True, forbid_unknown_fields=True):
    request_id: RequestId


class Inquire(msgspec.Struct, tag="inquire", frozen=True, forbid_unknown_fields=True):
    """Sent by a client once it has connected again, naming requests it sent before and awaits. ZeroMQ tells neither
    end of a reconnection, nor whether what was in flight over the old connection arrived: the engine answers Error
    `request_lost` under each id it holds no request for (another engine came up on the address, or the request or
    its reply was lost with the connection), which would otherwise never be answered. A request it holds is answered
    once, as ever."""

    request_ids: Annotated[list[RequestId], msgspec.Meta(min_length=1, max_length=MAX_INQUIRED_IDS)]


class ImageResult(msgspec.Struct, frozen=True):
    image: Blob
    seed: int
    level: int  # the cache level K the image resumed from (0: run in full)
    # of the nearest cached prompt of the same steps and size, its latent used or not (level 0: not); None: no
    # neighbour, an exact request, or guidance off
    similarity: float | None
    queue_ms: float
    run_ms: float
    steps_run: int  # denoising steps run for this image (N - level)
    worker: str
    # the sim backend's own figure, set only by simulated workers: its quality model's, with a per-prompt offset, as
    # the simulation's stand-in for what scoring the image would say
    quality: float | None = None
    simulated: bool = False  # made by a simulated worker: no model ran, run_ms is a scaled profile
    # the engine's estimate, percent of the exact image (100 at level 0), for every image whatever the backend: by its
    # level and neighbour's similarity, from the measured quality profile the engine was given, else its quality
    # model. None only from an engine older than the field (2026-12-05); a client older than it ignores it, as
    # msgspec skips fields a struct does not name
    estimated_quality: float | None = None


class Images(msgspec.Struct, tag="images", frozen=True):
    request_id: str
    images: list[ImageResult]


class Error(msgspec.Struct, tag="error", frozen=True):
    request_id: str
    code: str
    message: str


class Busy(msgspec.Struct, tag="busy", frozen=True):
    request_id: str
    retry_after_ms: int
    # queue_full, or client_share: this client holds its share of the queue while other clients wait
    reason: str = "queue_full"


class Cancelled(msgspec.Struct, tag="cancelled", frozen=True):
    request_id: str


class _RequestIdOnly(msgspec.Struct):
    request_id: str = ""


def salvage_request_id(header: bytes | memoryview) -> str:
    """The request id of a message that failed strict decoding, so its error can name it."""
    try:
        request_id = msgspec.msgpack.decode(header, type=_RequestIdOnly).request_id
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return ""
    return request_id[:MAX_REQUEST_ID_CHARS]


_CHOICES = choices_of(Generate)
# each field of a request read alone, as its encoded bytes: the rest of the message is skipped, not built
_ONE_FIELD = {
    name: msgspec.msgpack.Decoder(msgspec.defstruct("Sent", [("value", msgspec.Raw, None)], rename={"value": name}))
    for name in Generate.__struct_fields__
}
# a list or map refused is quoted only this large: reading one back costs about 0.15 us a byte (37 ms one of 220 KB
# of empty lists), and a client sending such requests held the engine's loop for seconds at a time
_MAX_QUOTED_CONTAINER_BYTES = 1024
# msgpack's first byte of an array (fixarray, array 16 and 32) and of a map (fixmap, map 16 and 32)
_CONTAINER_KINDS = dict.fromkeys([*range(0x90, 0xA0), 0xDC, 0xDD], "list") | dict.fromkeys(
    [*range(0x80, 0x90), 0xDE, 0xDF], "map"
)


class _Unquoted:
    """Words standing for a value too large to read back, written as they are."""

    def __init__(self, words: str):
        self._words = words

    def __repr__(self) -> str:
        return self._words


def _ext_words(code: int, data: memoryview) -> _Unquoted:
    # an extension value has no Python spelling: its repr named where the engine held it (a memory address)
    return _Unquoted(f"a msgpack ext of type {code}")


def refusal_words(reason: str, header: bytes | memoryview) -> str:
    """A request's decode error (`reason`, msgspec's words) as HTTP's 400s say it, in this protocol's field names:
    "n must be an integer >= 1, got 0", "output_format 'gif' must be one of 'png', 'jpeg', 'webp'". Each value is
    spelled as Python writes it, the language of engine.client (reprlib: shortened, and never failing on what
    msgpack can carry), but a large list or map as "a list of 220042 bytes", and an extension value, which Python
    has no spelling for, as "a msgpack ext of type 5". `reason` as it is where it names no
    field of a request (an empty message, one that is no map, a field unknown or missing)."""
    param = param_of(reason)
    if param not in _ONE_FIELD:
        return reason
    try:
        raw = _ONE_FIELD[param].decode(header).value
        if raw is None:
            return reason
        encoded = memoryview(raw)
        if len(encoded) > _MAX_QUOTED_CONTAINER_BYTES and (kind := _CONTAINER_KINDS.get(encoded[0])):
            sent = _Unquoted(f"a {kind} of {len(encoded)} bytes")
        else:
            sent = msgspec.msgpack.decode(encoded, ext_hook=_ext_words)
    except (msgspec.MsgspecError, RecursionError):  # RecursionError: nested too deep, see Codec.decode
        return reason
    return field_message(reason, param, {param: sent}, _CHOICES.get(param), reprlib.repr) or reason


def refuses_a_value(reason: str) -> bool:
    """Whether a decode error (`reason`, msgspec's words) refused a request's field for its value ("Expected `int` >= 1,
    got `0` - at `$.n`"): bad input, as HTTP's 400s are, where a message missing a field, naming one unknown, or no
    request at all comes from a peer of another protocol or version."""
    param = param_of(reason)
    return param in _ONE_FIELD and f"at `$.{param}`" in reason


FromClient = Generate | Cancel | Inquire
ToClient = Images | Error | Busy | Cancelled


def engine_side_codec() -> Codec:
    return Codec(FromClient)


def client_side_codec() -> Codec:
    return Codec(ToClient)
