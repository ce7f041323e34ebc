"""The two ways to send a request, behind one interface: HTTP (aiohttp) and ZeroMQ (AsyncArgusClient).

Each request asks for one image (n = 1), so a record's level, similarity and
quality describe that image. Transport failures become error records rather
than exceptions: one refused connection must not end a long run.
"""

from __future__ import annotations

import errno
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple

import aiohttp
import msgspec
import zmq

from engine.client import AsyncArgusClient, ClientClosed
from loadgen.records import Answer, ImageMeta, Record, make_record
from loadgen.stale_retry import pooled_session, post
from protocols.client_messages import Busy, Cancelled, Error, ImageResult, Images
from protocols.curve import ClientKeys

log = logging.getLogger(__name__)

GENERATIONS_PATH = "/v1/images/generations"
# a send that failed for want of a descriptor in this process (or the system): the generator's failure, which
# connection_error would lay at the engine's door
CLIENT_OUT_OF_FILES = "client_out_of_files"
# an answer that is not the engine's: not JSON of its schema, or images that hold none
BAD_RESPONSE = "bad_response"


@dataclass(frozen=True, slots=True)
class RequestOptions:
    width: int = 0  # 0 with height 0: the backend's default size ("auto")
    height: int = 0
    steps: int | None = None  # None: the backend's default


class Planned(NamedTuple):
    id: int
    prompt_index: int
    prompt: str
    scheduled_at: float
    seed: int | None


class LoadClient(ABC):
    def __init__(self, options: RequestOptions):
        self.options = options

    async def request(self, planned: Planned, run_start: float, slo_ms: float | None) -> Record:
        """Send now and wait for the answer; `run_start` is the time.perf_counter() offsets count from."""
        sent = time.perf_counter()
        answer = await self._exchange(planned.prompt, planned.seed, slo_ms)
        latency_ms = (time.perf_counter() - sent) * 1000.0
        if answer.kind == "images" and not answer.images:
            # it asked for one: an answer of none (an HTTP 200 of `"data": []`) was counted ok, an image served
            answer = Answer("error", code=BAD_RESPONSE, status=answer.status)
        return make_record(
            planned.id, planned.prompt_index, planned.scheduled_at, sent - run_start, latency_ms, answer, slo_ms
        )

    @abstractmethod
    async def _exchange(self, prompt: str, seed: int | None, slo_ms: float | None) -> Answer: ...

    @abstractmethod
    async def close(self) -> None: ...


# -- HTTP ---------------------------------------------------------------------------------
class _Argus(msgspec.Struct):
    level: int
    similarity: float | None = None
    quality: float | None = None
    queue_ms: float = 0.0
    run_ms: float = 0.0
    worker: str = ""
    simulated: bool = False
    estimated_quality: float | None = None


class _Entry(msgspec.Struct):
    argus: _Argus


class _ImagesBody(msgspec.Struct):
    data: list[_Entry]


class _ErrorInfo(msgspec.Struct):
    code: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _ErrorInfo


# typed decoders skip what they do not name, so a response's base64 images are never built as str
_IMAGES = msgspec.json.Decoder(_ImagesBody)
_ERROR = msgspec.json.Decoder(_ErrorBody)


class HttpLoadClient(LoadClient):
    """POST /v1/images/generations over one pooled aiohttp session.

    The pool has no connection limit: a limit would hold requests back in the
    client, and an open-loop generator must put every request on the wire on
    schedule, so that queueing happens in the engine where it is measured.
    """

    def __init__(self, base_url: str, options: RequestOptions = RequestOptions(), api_key: str | None = None):
        super().__init__(options)
        self._url = base_url.rstrip("/") + GENERATIONS_PATH
        self._headers = auth_headers(api_key)
        self._session: aiohttp.ClientSession | None = None

    def _body(self, prompt: str, seed: int | None, slo_ms: float | None) -> dict:
        o = self.options
        body: dict = {"prompt": prompt, "n": 1, "size": f"{o.width}x{o.height}" if o.width else "auto"}
        for name, value in (("seed", seed), ("num_inference_steps", o.steps), ("slo_ms", slo_ms)):
            if value is not None:
                body[name] = value
        return body

    async def _exchange(self, prompt: str, seed: int | None, slo_ms: float | None) -> Answer:
        if self._session is None:
            self._session = pooled_session(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None),
                headers=self._headers,
            )
        try:
            # sent again on a new connection where the pooled one it went on was closed by the engine as idle
            status, _, payload = await post(self._session, self._url, json=self._body(prompt, seed, slo_ms))
        except (aiohttp.ClientError, OSError) as exc:
            out_of_files = getattr(exc, "errno", None) in (errno.EMFILE, errno.ENFILE)
            return Answer("error", code=CLIENT_OUT_OF_FILES if out_of_files else "connection_error")
        if status == 200:
            try:
                entries = _IMAGES.decode(payload).data
            except (msgspec.DecodeError, msgspec.ValidationError):
                return Answer("error", code=BAD_RESPONSE, status=status)
            return Answer("images", status=status, images=[_image(entry.argus) for entry in entries])
        try:
            code = _ERROR.decode(payload).error.code or f"http_{status}"
        except (msgspec.DecodeError, msgspec.ValidationError):
            code = f"http_{status}"
        if status == 429:
            return Answer("busy", code=code, status=status)
        # the engine stopped with it in flight: what a ZeroMQ Cancelled is, not counted against the SLO
        return Answer("cancelled" if code == "cancelled" else "error", code=code, status=status)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def auth_headers(api_key: str | None) -> dict[str, str]:
    """For an engine started with --api-key."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _image(meta: _Argus | ImageResult) -> ImageMeta:
    """What a reply says of one image, from HTTP's `argus` object or a ZeroMQ ImageResult (the same fields)."""
    return ImageMeta(
        meta.level,
        meta.similarity,
        meta.quality,
        meta.queue_ms,
        meta.run_ms,
        meta.worker,
        meta.simulated,
        meta.estimated_quality,
    )


# -- ZeroMQ -------------------------------------------------------------------------------
class ZmqLoadClient(LoadClient):
    """Generate messages pipelined over one DEALER socket (engine.client.AsyncArgusClient).

    Raises ValueError for what is not an engine's address (`localhost:5555`, with no transport), zmq.ZMQError for
    one ZeroMQ cannot connect to: at once, not as a failure of every request.
    """

    def __init__(self, address: str, options: RequestOptions = RequestOptions(), curve: ClientKeys | None = None):
        super().__init__(options)
        self._client = AsyncArgusClient(address, curve=curve)
        self._refusal_said = False

    async def _exchange(self, prompt: str, seed: int | None, slo_ms: float | None) -> Answer:
        o = self.options
        fields: dict = {"width": o.width, "height": o.height, "steps": o.steps or 0, "seed": seed, "slo_ms": slo_ms}
        try:
            reply = await self._client.generate(prompt, **fields)
        except (ClientClosed, zmq.ZMQError):
            return Answer("error", code="connection_error")
        except ConnectionRefusedError as refused:
            if not self._refusal_said:  # every request after it is refused alike
                self._refusal_said = True
                log.error("%s: no request over --zmq can be served", refused)
            return Answer("error", code="connection_refused")
        if isinstance(reply, Images):
            return Answer("images", images=[_image(image) for image in reply.images])
        if isinstance(reply, Busy):
            return Answer("busy", code="busy")
        if isinstance(reply, Cancelled):
            return Answer("cancelled", code="cancelled")
        assert isinstance(reply, Error)
        return Answer("error", code=reply.code)

    async def close(self) -> None:
        await self._client.close()
