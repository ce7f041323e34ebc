"""The HTTP schema: OpenAI's `POST /v1/images/generations`, with argus extension fields.

Decoded strictly (msgspec.json): a wrong type, an unknown field, a field sent
twice or a value out of range is a 400 naming the field (and the value refused,
as JSON spells it); null is a field's default. OpenAI's other
fields that argus can honour are accepted with the values OpenAI's own client
sends, for clients written for OpenAI: `model` is echoed back; the rest do not
change generation (docs/http-api.md says why, field by field). Values argus cannot
honour are a 400 saying why: `background` transparent, `stream` true,
`partial_images` above 0, any `frame_count`, `frame_duration_ms` or `svg` but
null; the types leave them out, so that the published schema (/openapi.json)
lists only values that are served.
"""

from __future__ import annotations

import codecs
import difflib
import json
import re
import time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

import msgspec

from protocols.client_messages import Generate, ImageResult
from protocols.field_errors import EXPECTED, choices_of, field_message, kind_words, param_of
from protocols.limits import (
    MAX_GUIDANCE,
    MAX_IMAGES_PER_REQUEST,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    OutputCompression,
    OutputFormat,
    Prompt,
)
from protocols.shortened import cut_middle

# a body (at most 1 MiB, a request a few KiB) that has not come whole in this time is not coming: aiohttp waits for it
# for ever, holding the connection, where it drops one idle or still sending its headers after its keep-alive timeout
BODY_READ_S = 30.0
# answers a retry of the same request cannot change, sent with x-should-retry: false: the official OpenAI clients
# retry every 5xx (twice by default, within a second or two) unless told not to. The engine already sent a
# worker_lost request 3 times, and a request past its deadline would only come later still (and load an engine that
# could not meet it); an internal_error is a bug the same request meets again, and a transfer coding not understood
# is not understood on a retry either. Not among them: worker_error (a failed
# batch fails each of its requests, most often for want of GPU memory beside the others), no_worker, shutting_down
# and cancelled (a worker, or the engine restarted or another behind the same proxy, may serve it), busy (429, with
# Retry-After)
RETRY_CANNOT_HELP = ("worker_lost", "deadline_exceeded", "internal_error", "unsupported_transfer_encoding")
SIZE_PATTERN = r"^(auto|[1-9][0-9]{0,4}x[1-9][0-9]{0,4})$"
# matched whole: the schema's pattern is searched with Python's `$`, which also matches before a final newline
_SIZE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")


class ImageGenerationRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    prompt: Prompt
    model: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    # null is the default, as in OpenAI's API: its client sends null for an argument given as None
    n: Annotated[int, msgspec.Meta(ge=1, le=MAX_IMAGES_PER_REQUEST)] | None = 1
    size: Annotated[str, msgspec.Meta(max_length=32, pattern=SIZE_PATTERN)] | None = "auto"
    response_format: Literal["b64_json", "url"] | None = "b64_json"
    output_format: OutputFormat | None = "png"
    output_compression: OutputCompression | None = None
    # OpenAI's fields that change nothing here: argus's controller sets each image's quality within the SLO, and
    # the rest ask for what argus does anyway (opaque images, no moderation) or have nothing to act on
    quality: Literal["auto", "standard", "hd", "low", "medium", "high", "xhigh", "max"] | None = None
    complexity: Literal["low", "medium", "high"] | None = None  # OpenAI's planning effort: argus plans nothing
    style: Literal["vivid", "natural"] | None = None
    # OpenAI's fields that ask for what argus cannot do take only the values it can: the published schema
    # (/openapi.json) lists what is served, and a value refused is told why (_CANNOT_DO)
    background: Literal["auto", "opaque"] | None = None  # not "transparent": argus's images are opaque
    moderation: Literal["auto", "low"] | None = None
    user: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    safety_identifier: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    stream: Literal[False] | None = None  # images come whole
    partial_images: Literal[0] | None = None  # OpenAI's 1-3 are streamed
    # the shape of OpenAI's GIF and SVG output (output_format gif, svg), which argus does not make: an app that passes
    # every argument of OpenAI's client, None where it wants the default, was refused them as unknown fields
    frame_count: None = None
    frame_duration_ms: None = None
    svg: None = None
    # argus extensions
    negative_prompt: Annotated[str, msgspec.Meta(max_length=MAX_PROMPT_CHARS)] | None = None
    seed: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEED)] | None = None
    num_inference_steps: Annotated[int, msgspec.Meta(ge=1, le=MAX_STEPS)] | None = None
    guidance_scale: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_GUIDANCE)] | None = None
    slo_ms: Annotated[float, msgspec.Meta(gt=0)] | None = None
    exact: bool | None = None  # every step run, never from a cached latent (Generate.exact)


class InvalidRequest(ValueError):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


_NULL_MEANS = {
    field.name: field.default
    for field in msgspec.structs.fields(ImageGenerationRequest)
    if field.default not in (None, msgspec.NODEFAULT)
}


_FIELDS = frozenset(field.name for field in msgspec.structs.fields(ImageGenerationRequest))
# msgspec's words for a key the schema lacks
_UNKNOWN = "Object contains unknown field"


def parse_request(body: bytes) -> ImageGenerationRequest:
    """The request, with a field sent as null holding its default."""
    # a file saved by a Windows editor begins with UTF-8's byte order mark, which `curl -d @file` sends: RFC 8259 has
    # JSON sent without one and lets a reader ignore it, as Python's json and Node's body-parser do. It was a 400,
    # "invalid character (byte 0)". A malformed body's message then counts bytes from after the mark
    body = body.removeprefix(codecs.BOM_UTF8)
    try:
        request = msgspec.json.decode(body, type=ImageGenerationRequest)
    except msgspec.ValidationError as exc:
        # read again untyped, for the value refused: the typed read stopped at it, and what follows may not parse
        sent = _untyped(body)
        _refuse_duplicate_keys(body, sent)  # else the value named could be either of the two sent
        request = _with_whole_numbers(sent, exc)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(_malformed_json_message(body, exc)) from None
    else:  # what the refusal's read checked already, when whole numbers made it a request
        _refuse_duplicate_keys(body, _untyped(body))
    nulls = {name: default for name, default in _NULL_MEANS.items() if getattr(request, name) is None}
    return msgspec.structs.replace(request, **nulls) if nulls else request


def _with_whole_numbers(sent: object, error: msgspec.ValidationError) -> ImageGenerationRequest:
    """The request `sent` (read untyped) that the typed read refused for `error`, read with each integer field sent as
    a whole number with a fraction (1.0, 3e1) taken as that integer; else the refusal. JSON has one kind of number,
    and a JSON Schema's "integer" (/openapi.json's n, seed...) is any number without a fractional part: 1.0 from a
    JavaScript client was refused, "n must be an integer, got 1.0". 1.5, "1" and true are still refused."""
    # each field's value as sent, before it was taken as an integer: a later refusal of the field quotes it ("n must
    # be an integer <= 10, got 2e1"), where it quoted the integer, a number the client never sent
    as_sent: dict[str, object] = {}
    while True:
        message = str(error)
        param = param_of(message)
        if message.startswith(_UNKNOWN):  # the key as sent: msgspec's words end it at a backtick within it
            param = next(key for key in sent if key not in _FIELDS)
        whole = _whole_number(message, sent.get(param)) if param is not None else None  # None: a field missing
        if whole is None:
            quoted = {**sent, **as_sent} if as_sent else sent  # sent may be no object at all (a body of 1e400)
            raise InvalidRequest(_invalid_field_message(message, param, quoted), param) from None
        as_sent[param] = sent[param]
        sent[param] = whole  # once per field: the next read refuses another field, or none
        try:
            return msgspec.json.decode(msgspec.json.encode(sent), type=ImageGenerationRequest)
        except msgspec.ValidationError as again:
            error = again


def _whole_number(message: str, value: object) -> int | None:
    """`value` (a number as sent, _UNTYPED) as an integer, if msgspec's `message` refused it as a float sent for an
    integer field and it is a whole number msgspec reads as an integer (from int64's least to uint64's greatest;
    beyond them, refused as it was)."""
    expected = EXPECTED.fullmatch(message)
    if not (expected and expected["got"] == "float" and expected["kind"].startswith("int")):
        return None
    # read exactly, as written: read as a float, 12345678901234567.0 was seed 12345678901234568, 9223372036854775807.0
    # was 2**63 and refused "<= 9223372036854775807", and 1.0000000000000001 and 1e-400 were taken for 1 and 0
    number = _exactly(bytes(value).decode()) if isinstance(value, msgspec.Raw) else Decimal("NaN")
    if number.is_nan() or not -(2**63) <= number < 2**64 or number != number.to_integral_value():
        return None
    return int(number)


def _exactly(written: str) -> Decimal:
    """A JSON number as written. An exponent past what a Decimal holds (about 10**18 either way) raised
    InvalidOperation, a 500: the number is 0 with a mantissa of zeros, and otherwise no whole number (msgspec refuses
    as out of range one too great for a float before this reads it, so what is left is a fraction too small for one)."""
    try:
        return Decimal(written)
    except InvalidOperation:
        return Decimal(0) if not written.lower().partition("e")[0].strip("-0.") else Decimal("NaN")


def _as_sent(text: str) -> msgspec.Raw:
    return msgspec.Raw(text.encode())


# each number with a fraction or an exponent is kept as its text, to be quoted as the client wrote it: read as a
# float, 2e1 was quoted "20.0" and 1.50 "1.5". JSON bounds no number (RFC 8259, section 6): one beyond a 64-bit float
# (1e400), read as a float, failed the whole untyped read ("number out of range - at `$[...]`"), a body said to be
# malformed JSON and no field named. Encoded again (_with_whole_numbers), each is the text sent
_UNTYPED = msgspec.json.Decoder(float_hook=_as_sent)


def _untyped(body: bytes) -> object:
    try:
        return _UNTYPED.decode(body)
    # lists nested a thousand deep, which the typed read refused at the first (no field nests), were a 500
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidRequest(_malformed_json_message(body, exc)) from None


def _refuse_duplicate_keys(body: bytes, sent: object) -> None:
    """A key sent twice in one object is a 400 naming it: msgspec, as most parsers, keeps the last value, and a proxy
    or a log that reads the first would see another request than the one served."""
    # each key is followed by one colon: a body with no more colons than its distinct top-level keys has no key twice
    # and no nested object. That proof spares most bodies the parse below: parse_request took 1.1 us of a usual body,
    # 1.5 us with it, 2.5 us with that parse for every body
    if isinstance(sent, dict) and body.count(b":") == len(sent):
        return
    try:
        _KEYS_ONCE.decode(body.decode())  # UTF-8: msgspec has read it
    except _KeyTwice as twice:
        # param: the field, when the key is one the body holds; a key of a nested object names none
        param = twice.key if isinstance(sent, dict) and twice.key in sent else None
        raise InvalidRequest(f"duplicate field {_json_brief(twice.key)} in the JSON body", param) from None
    except RecursionError as exc:  # msgspec read it, nested about as deep as Python's parser allows
        raise InvalidRequest(_malformed_json_message(body, exc)) from None


class _KeyTwice(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_key_twice(pairs: list[tuple[str, object]]) -> dict[str, object]:
    fields = dict(pairs)
    if len(fields) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _KeyTwice(key)
            seen.add(key)
    return fields


_KEYS_ONCE = json.JSONDecoder(object_pairs_hook=_no_key_twice)


def parse_size(size: str) -> tuple[int, int]:
    """`WxH` -> (width, height); `auto` -> (0, 0), the backend's default."""
    if size == "auto":
        return 0, 0
    match = _SIZE.fullmatch(size)
    if not match:
        raise InvalidRequest(_size_format_message(size), "size")
    return int(match.group(1)), int(match.group(2))


def _size_format_message(size: str) -> str:
    return f'size {_json_brief(size)} must be "auto" or "WIDTHxHEIGHT", e.g. "1024x1024"'


def to_generate(request: ImageGenerationRequest, request_id: str) -> Generate:
    width, height = parse_size(request.size)
    optional = {
        name: value
        for name, value in (
            ("steps", request.num_inference_steps),
            ("guidance_scale", request.guidance_scale),
        )
        if value is not None
    }
    return Generate(
        request_id=request_id,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        n=request.n,
        width=width,
        height=height,
        seed=request.seed,
        slo_ms=request.slo_ms,
        exact=bool(request.exact),
        output_format=request.output_format,
        output_compression=request.output_compression,
        **optional,
    )


class ArgusImageInfo(msgspec.Struct, frozen=True):
    """What happened to one image."""

    level: int  # cache level K the image resumed from (0: exact generation)
    # of the nearest cached prompt of the same steps and size, its latent used or not (level 0: not); None: no
    # neighbour, an exact request, or guidance off
    similarity: float | None
    seed: int
    queue_ms: float  # admission to the dispatch of the run that made it
    run_ms: float  # that run's, the whole batch's
    steps_run: int  # denoising steps run (N - level)
    worker: str
    quality: float | None  # the sim backend's modelled quality, simulated workers only (ImageResult.quality)
    # made by a simulated worker (--backend sim): no model ran, its run_ms is a scaled profile, its quality modelled
    simulated: bool
    # the engine's estimate for every image, percent of the exact one (ImageResult.estimated_quality)
    estimated_quality: float | None


class ImageData(msgspec.Struct, frozen=True, omit_defaults=True):
    argus: ArgusImageInfo
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    created: int
    data: list[ImageData]
    output_format: str
    size: str
    # OpenAI's report of the images' background, which code written for its GPT image models reads: argus's are
    # opaque, each an RGB image (workers/image_encoding.py). Not OpenAI's `quality` (its low to max, which argus does
    # not make: each image's argus.estimated_quality says its own) nor `usage` (tokens, which argus does not count)
    background: Literal["opaque"]
    model: str | None = None


class Model(msgspec.Struct, frozen=True):
    """What GET /v1/models lists: the one model this engine serves (the images endpoint echoes any `model`)."""

    id: str
    created: int
    object: str = "model"
    owned_by: str = "argus"


class ModelList(msgspec.Struct, frozen=True):
    data: list[Model]
    object: str = "list"


class ErrorDetail(msgspec.Struct, frozen=True):
    message: str
    type: str  # OpenAI's kind of error (error_response)
    param: str | None
    code: str  # argus's reason: busy, worker_error, deadline_exceeded, ...


class ErrorResponse(msgspec.Struct, frozen=True):
    error: ErrorDetail


def image_data(result: ImageResult, b64_json: str | None = None, url: str | None = None) -> ImageData:
    info = ArgusImageInfo(
        level=result.level,
        similarity=result.similarity,
        seed=result.seed,
        queue_ms=round(result.queue_ms, 3),
        run_ms=round(result.run_ms, 3),
        steps_run=result.steps_run,
        worker=result.worker,
        quality=result.quality,
        simulated=result.simulated,
        estimated_quality=None if result.estimated_quality is None else round(result.estimated_quality, 2),
    )
    return ImageData(argus=info, b64_json=b64_json, url=url)


def images_response(data: list[ImageData], request: ImageGenerationRequest, width: int, height: int) -> ImagesResponse:
    return ImagesResponse(
        created=int(time.time()),
        data=data,
        output_format=request.output_format,
        size=f"{width}x{height}",
        background="opaque",
        model=request.model,
    )


# OpenAI's kind of error for the statuses that have one of their own; 5xx is "server_error", the rest of 4xx
# "invalid_request_error", as OpenAI sends them. Code written for OpenAI's API branches on `type`: argus sent its
# own reason there too (`busy`, `worker_error`, ...), a kind no such code knows
_KINDS = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def error_response(message: str, code: str, status: int, param: str | None = None) -> ErrorResponse:
    """The error as OpenAI's API shapes it: `type` the kind of error, `code` argus's precise reason."""
    kind = "server_error" if status >= 500 else _KINDS.get(status, "invalid_request_error")
    return ErrorResponse(ErrorDetail(message=message, type=kind, param=param, code=code))


_CHOICES = choices_of(ImageGenerationRequest)


# what a value OpenAI takes and argus refuses asks for, and why argus cannot do it: msgspec's "Invalid enum value 2 -
# at `$.partial_images`" gave the rule but not the reason
_CANNOT_DO = {
    "stream": "stream must be false or omitted: argus does not stream, images come whole",
    "partial_images": "partial_images must be 0 or omitted: argus does not stream, images come whole",
    **{
        name: f"{name} must be null or omitted: it shapes a GIF (output_format gif), and argus makes no GIFs"
        for name in ("frame_count", "frame_duration_ms")
    },
    "svg": "svg must be null or omitted: it shapes an SVG (output_format svg), and argus makes no SVGs",
}


def _invalid_field_message(message: str, param: str | None, sent: object) -> str:
    # in the words of the fields checked by hand (size): protocols.field_errors, with each value as JSON spells it; a
    # value OpenAI takes and argus cannot serve is told why
    if param in _CANNOT_DO:
        return _CANNOT_DO[param]
    if message.startswith(_UNKNOWN):
        return _unknown_field_message(param)
    if param == "background" and sent[param] == "transparent":
        return 'background "transparent" cannot be made: argus\'s images are opaque ("auto" or "opaque")'
    # msgspec reads a number before it checks the field's type: said of any field sent one, a string's too
    if message.startswith("Number out of range"):
        if param is None:  # the body is the number
            return f"the body must be a JSON object, not {kind_words('float')}"
        return f"{param} {_json_brief(sent[param])} is out of range: beyond a 64-bit float's, about 1.8e308"
    expected = EXPECTED.fullmatch(message)
    if param is None:  # of the whole body: "Expected `object`, got `array`"
        got = expected and expected["got"]
        return f"the body must be a JSON object, not {kind_words(got)}" if got else message
    if param == "size" and expected and expected["got"] is None:  # the pattern, which msgspec quotes as a regex
        return _size_format_message(sent[param])
    return field_message(message, param, sent, _CHOICES.get(param), _json_brief) or message


# what other APIs call a field this one has: argus's ZeroMQ client (steps, width, height) and diffusers' pipelines
_FIELD_NAMED = {"steps": "num_inference_steps", "width": "size", "height": "size", "num_images_per_prompt": "n"}
_EXTENSIONS = "negative_prompt, seed, num_inference_steps, guidance_scale, slo_ms and exact"


def _unknown_field_message(key: str) -> str:
    """A field the schema lacks, and the one that was likely meant: msgspec's "Object contains unknown field
    `steps`" left a client of OpenAI's SDK, whose extra_body is sent as written, to find the name alone."""
    meant = _FIELD_NAMED.get(key) or next(iter(difflib.get_close_matches(key, _FIELDS, n=1, cutoff=0.75)), None)
    if meant is not None:
        return f"unknown field {_json_brief(key)}: did you mean {_json_brief(meant)}?"
    return (
        f"unknown field {_json_brief(key)}: argus takes the fields of OpenAI's image generation and its own"
        f" {_EXTENSIONS} (GET /openapi.json lists them all)"
    )


_BRIEF_CHARS = 30  # reprlib's length for a string; the message echoed a value so before (in Python's spelling)
_BRIEF_TAIL_CHARS = 14  # of what is kept, the end's half the larger, as reprlib cuts


def _json_brief(value: object) -> str:
    """`value` spelled as the client sent it, JSON (null, true, "a"), where Python's repr said None, True, 'a'; its
    middle cut out if long. Every value here came from the JSON parser, so it encodes."""
    return cut_middle(msgspec.json.encode(value).decode(), _BRIEF_CHARS, _BRIEF_TAIL_CHARS)


def _malformed_json_message(body: bytes, error: Exception) -> str:
    # msgspec's "JSON is malformed: trailing comma in object (byte 14)" came as "malformed JSON: JSON is malformed:
    # ...", and an empty or cut short body as "Input data was truncated"
    if not body.strip():
        return "malformed JSON: the body is empty"
    # UTF-32LE's mark begins as UTF-16LE's does; UTF-32BE's (00 00 FE FF) is named alone: its bytes are no ASCII
    # character's in a wide encoding (_WIDE_JSON), and a body so begun was "invalid character (byte 0)"
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)):
        return "malformed JSON: the body is UTF-16 or UTF-32 (it begins with a byte order mark): send JSON as UTF-8"
    if _WIDE_JSON.match(body):
        # .NET's StringContent sends Encoding.Unicode so, without a mark: it was "object keys must be strings (byte 1)"
        return "malformed JSON: the body is UTF-16 or UTF-32 (NUL bytes between its characters): send JSON as UTF-8"
    if isinstance(error, RecursionError):
        return "malformed JSON: lists or objects nested too deeply"
    message = str(error)
    if message == "Input data was truncated":
        return _truncated_message(body)
    if message == "Invalid UTF-8 encoded string":
        return _not_utf8_message(body)
    reason = message.removeprefix("JSON is malformed: ")
    unpaired = _UNPAIRED_HIGH_HALF.fullmatch(reason)
    if unpaired:
        after = int(unpaired.group(1))
        return _unpaired_high_half_message(body[after - 6 : after], after)
    return f"malformed JSON: {reason[:1].lower()}{reason[1:]}"


# JSON's first two characters are ASCII: in UTF-32BE, UTF-16BE, UTF-32LE or UTF-16LE the NUL bytes among its first
# four fall so (RFC 4627, section 3). Where else they fall is no JSON's (gzip's header: 1f 8b 08 00)
_WIDE_JSON = re.compile(rb"\0\0\0[^\0]|\0[^\0]\0[^\0]|[^\0]\0\0\0|[^\0]\0[^\0]\0")
# msgspec reads the 6 bytes after a \uD800-\uDBFF escape (the first half of a UTF-16 surrogate pair) as the \u escape
# of its second half: when they are something else, it says this, at the byte after the first half
_UNPAIRED_HIGH_HALF = re.compile(r"unexpected end of escaped utf-16 surrogate pair \(byte (\d+)\)")
# such an escape in a JSON string: a backslash after an even run of them (escaped backslashes) starts an escape
_HIGH_HALF_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2})")


def _not_utf8_message(body: bytes) -> str:
    """msgspec says "Invalid UTF-8 encoded string", naming no byte: a prompt of "café" typed in a client that sends
    Latin-1 or Windows-1252 (Windows PowerShell 5.1's Invoke-RestMethod, whatever charset its Content-Type names) read
    as a malformed body its user could not find the fault in."""
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        where = f" at byte {exc.start} ({body[exc.start]:#04x})"
    else:  # msgspec and Python disagree: its word is all there is
        where = ""
    return f"malformed JSON: the body is not UTF-8{where}: send it as UTF-8 (RFC 8259: JSON has no other charset)"


def _truncated_message(body: bytes) -> str:
    """msgspec says "truncated" of a body cut short, and of a whole one where fewer than 6 bytes follow a first half
    with no second ('{"prompt":"\\ud83d"}'), which was answered "the body ends before the JSON does". The standard
    library's parser, which takes a lone half, tells them apart."""
    try:
        json.loads(body.decode())
    except (ValueError, RecursionError):  # a UnicodeDecodeError is a ValueError
        halves = []  # cut short indeed
    else:
        # the whole body parses: msgspec stopped after the last first half, within 6 bytes of the end (none seen:
        # msgspec's word is all there is; no body is known to come here)
        halves = list(_HIGH_HALF_ESCAPE.finditer(body))
    if not halves:
        return f"malformed JSON: the body ends before the JSON does (byte {len(body)})"
    return _unpaired_high_half_message(halves[-1].group(1), halves[-1].end())


def _unpaired_high_half_message(escape: bytes, after: int) -> str:
    return (
        f"malformed JSON: {escape.decode()} is the first half of a UTF-16 surrogate pair, with no"
        f" \\udc00-\\udfff escape after it (byte {after})"
    )
