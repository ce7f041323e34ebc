"""The HTTP front door (aiohttp): OpenAI-compatible image generation, health, readiness, metrics."""

from __future__ import annotations

import asyncio
import binascii
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import msgspec
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from engine.config import served_model_name
from engine.http.api_keys import ApiKeys
from engine.http.body_budget import BodiesFull, BodyBudget
from engine.http.expect import met_later, read_body, unmet_expectation, unrouted_met_later
from engine.http.forwarded_for import TrustedProxies
from engine.http.half_close import answer_half_closed
from engine.http.head_limit import head_bounded
from engine.http.image_files import ImageFiles, ImagesTooLarge
from engine.http.keep_alive import advertise_keep_alive
from engine.http.origins import host_name, named_hosts, names_this_engine
from engine.http.parse_errors import MALFORMED, MALFORMED_BODY
from engine.http.proxy_hints import PROXY_HINTS_KEY, ProxyHints
from engine.http.readiness import readiness
from engine.http.request_ids import REQUEST_ID, request_id_middleware
from engine.http.stopping import closing_connections
from engine.version import argus_version
from protocols.client_messages import Busy, Cancelled, Error, ImageResult, Images
from protocols.limits import retry_after_s
from protocols.openai_images import (
    BODY_READ_S,
    RETRY_CANNOT_HELP,
    ImageGenerationRequest,
    InvalidRequest,
    Model,
    ModelList,
    error_response,
    image_data,
    images_response,
    parse_request,
    to_generate,
)
from protocols.openapi import openapi_document
from protocols.shortened import cut_middle

if TYPE_CHECKING:
    from engine.server import Engine

log = logging.getLogger("argus.http")

# the field an error names wherever it is answered, as the OpenAI schema calls it: a step count admitted before any
# worker said hello is refused once one has (engine/dispatch/dispatcher.py), as admission refuses it
_FIELD_OF = {"invalid_size": "size", "invalid_steps": "num_inference_steps"}
# and at admission (its one invalid_request: n above --max-queue)
_ADMISSION_PARAMS = {**_FIELD_OF, "invalid_request": "n"}
# a base64 answer is written a slice of an image at a time, the loop free between slices. Made whole, for ten 2 MB
# PNGs, it took 7 to 18 ms of the loop's time at a stretch (msgspec's one call that encoded the base64 strings, into a
# body then copied into the transport's buffer) and held the images about 4 times over; base64-encoding each on a
# thread freed the loop of nothing, binascii holding the GIL while it encodes. A slice of 48 KiB (a multiple of 3,
# so that the slices' base64 joins into the image's) takes about 0.1 ms
_B64_SLICE_BYTES = 48 * 1024
# where each image's base64 goes in the answer encoded with b64_json "": JSON escapes each quote within a string, and
# no other key is b64_json, so these bytes are found nowhere else in it
_B64_SLOT = b'"b64_json":""'
# a body larger than this is read on a thread: one of 1 MiB holding 150,000 fields took the loop 33 ms to refuse (the
# search for a field sent twice), where a usual body of under 1 KiB takes a few us
_INLINE_PARSE_BYTES = 64 * 1024

_STATUS = {
    "invalid_request": 400,
    MALFORMED: 400,
    "invalid_size": 400,
    "invalid_steps": 400,
    "body_too_large": 413,
    "request_timeout": 408,
    "unsupported_encoding": 415,
    "unsupported_media_type": 415,
    "unsupported_transfer_encoding": 501,
    "busy": 429,
    "worker_error": 500,
    "no_worker": 503,
    "worker_lost": 503,
    "shutting_down": 503,
    "too_many_bodies": 503,
    "cancelled": 503,
    "deadline_exceeded": 504,
    "not_found": 404,
    "unauthorized": 401,
    "host_not_allowed": 403,
    "expectation_failed": 417,
    "headers_too_large": 431,
    "no_plan": 503,
    "model_not_found": 404,
    "internal_error": 500,
}

ENGINE_KEY = web.AppKey("engine", object)
MODEL_KEY = web.AppKey("model", Model)
PROXIES_KEY = web.AppKey("proxies", TrustedProxies)
# the document, made once: it read the package's metadata from disk on the loop at every request
OPENAPI_KEY = web.AppKey("openapi", bytes)
# who holds the key a request came with, under --api-keys ("" for --api-key's one key)
KEY_HOLDER = web.RequestKey("key_holder", str)
BODY_BUDGET_KEY = web.AppKey("body_budget", BodyBudget)
_BODY_HEADERS = frozenset({"content-type", "content-length"})


class _MalformedMessages(logging.Filter):
    """A bad chunk aiohttp's parser meets mid-body fails the body (engine/http/parse_errors.py): the engine answers
    it, and aiohttp, reading what is left of the body before it closes the connection, logs the failure at ERROR with
    a traceback quoting the bytes it choked on, the parse error as its cause: any client, or a scanner on the
    internet, wrote errors an operator is paged for, and a prompt's words into the log. They are the client's errors:
    one line at DEBUG, naming the kind alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, web.RequestPayloadError):
            exc = exc.__cause__
        if not isinstance(exc, HttpProcessingError):
            return True
        # aiohttp's message names the peer alone ("Error handling request from ADDRESS"); the bytes are in exc
        log.debug("%s: a malformed HTTP message, answered %d (%s)", record.getMessage(), exc.code, type(exc).__name__)
        return False


# the logger aiohttp's connections log to (engine/server.py hands it to the runner)
SERVER_LOG = logging.getLogger("argus.http.server")
SERVER_LOG.addFilter(_MalformedMessages())


# answered without an API key: liveness probes must not need a secret
_OPEN_PATHS = frozenset({"/health"})
# answered whatever X-Request-ID a proxy on a probe's way adds: a probe that fails restarts or drains a healthy engine
_PROBE_PATHS = frozenset({"/health", "/ready"})
GENERATIONS_PATH = "/v1/images/generations"


def build_app(engine: Engine, loopback: bool) -> web.Application:
    """`loopback`: whether the HTTP door is bound to loopback addresses alone (engine/http/listener.on_loopback)."""
    host_checked = engine.api_keys is None and loopback
    door = _open_door
    if engine.api_keys is not None:
        door = _api_key_door(engine.api_keys, engine.metrics.door_refusals.labels("http", "unauthorized").inc)
    elif host_checked:
        public_host = URL(engine.config.public_url).host if engine.config.public_url else None
        door = _loopback_host_door(public_host, engine.metrics.door_refusals.labels("http", "host_not_allowed").inc)
    # the request's id outside the JSON errors: every reply says it, the engine's own failures too
    refusal = _request_id_refusal(door)
    # outside the JSON errors, whose 503s it closes too
    closing = closing_connections(lambda: engine.running)
    middlewares = [answer_half_closed, closing, request_id_middleware(refusal, _PROBE_PATHS), _json_errors]
    if door is not _open_door:
        middlewares.append(_checked_at(door))
    middlewares += [head_bounded(_refused_at_the_door), _expectations]
    app = web.Application(client_max_size=engine.config.max_body_bytes, middlewares=middlewares)
    advertise_keep_alive(app, engine.config.keepalive_timeout_s)
    app[ENGINE_KEY] = engine
    app[PROXY_HINTS_KEY] = ProxyHints()
    launch = engine.config.launch
    app[MODEL_KEY] = Model(served_model_name(launch.backend, launch.model), created=int(time.time()))
    app[PROXIES_KEY] = TrustedProxies(engine.config.forwarded_allow_ips)
    app[BODY_BUDGET_KEY] = BodyBudget()
    document = openapi_document(argus_version(), engine.api_keys is not None, host_checked, engine.config.public_url)
    app[OPENAPI_KEY] = msgspec.json.encode(document)
    # an Expect is met once the request is checked (engine/http/expect.py), not by aiohttp before that
    expect = {"expect_handler": met_later}
    app.router.add_post(GENERATIONS_PATH, generate, **expect)
    app.router.add_get("/v1/images/files/{name}", image_file, name="image_file", **expect)
    app.router.add_get("/health", health, **expect)
    app.router.add_get("/ready", ready, **expect)
    app.router.add_get("/metrics", metrics, **expect)
    app.router.add_get("/openapi.json", openapi, **expect)
    app.router.add_get("/plan", plan, **expect)
    app.router.add_get("/v1/models", models, **expect)
    app.router.add_get("/v1/models/{model}", model, **expect)
    unrouted_met_later(app.router)
    return app


def _json(body: msgspec.Struct, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status, content_type="application/json", headers=headers)


def _error(code: str, message: str, param: str | None = None, headers: dict | None = None) -> web.Response:
    status = _STATUS.get(code, 500)
    if code in RETRY_CANNOT_HELP:
        headers = {**(headers or {}), "x-should-retry": "false"}  # read by OpenAI's clients (not a standard header)
    return _json(error_response(message, code, status, param), status, headers)


def _request_id_refusal(door: Door) -> Callable[[web.Request, str], web.Response]:
    """A 400 for an X-Request-ID that is none; counted on the images path, as a body that is no request is. Not
    for a request the door refuses, which is told that alone, uncounted: one without the API key was answered a 400
    and counted, and any client that could reach the engine moved the series an operator alerts on."""

    def refuse(request: web.Request, message: str) -> web.Response:
        if (refused := door(request)) is not None:
            return refused
        return _refused_at_the_door(request, "invalid_request", message)

    return refuse


def _retry_after(engine: Engine, code: str) -> dict | None:
    """Retry-After for an admitted request's error, where the engine knows when a retry could be served: no_worker
    while its own workers are on their way back (engine/fleet/slot_supervision.py). Not worker_lost, which no retry
    helps; nor shutting_down or cancelled: the engine is stopping, and whether another starts on its address is not its
    to know (docs/reliability.md)."""
    back_in_s = engine.launcher.back_in_s() if code == "no_worker" else None
    return None if back_in_s is None else {"Retry-After": str(retry_after_s(back_in_s))}


@web.middleware
async def _json_errors(request: web.Request, handler):
    """aiohttp's own errors (413, 404, 405), and a failure of the engine's own, answered in the API's JSON error
    shape: a client of the OpenAI API reads the error from the body."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge as exc:
        return _error("body_too_large", exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if request.method == hdrs.METH_CONNECT and isinstance(exc, web.HTTPNotFound):
            # no method is taken on a tunnel's target: the Allow a 405 must carry is empty (RFC 9110, 10.2.1)
            exc = web.HTTPMethodNotAllowed(request.method, ())
        # keep what the status needs (Allow on a 405), not the plain-text body's own headers
        kept = {name: value for name, value in exc.headers.items() if name.lower() not in _BODY_HEADERS}
        code = exc.reason.lower().replace(" ", "_")
        return _json(error_response(_routing_message(request, exc), code, exc.status), exc.status, kept)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error("internal_error", "the engine failed to answer this request")


# a path quoted back: the request line may be 8 KiB long
_PATH_CHARS = 120


def _routing_message(request: web.Request, exc: web.HTTPException) -> str:
    """What the router refused, said so that the client learns what to send instead. aiohttp's own words, "Not
    Found", read to a client of OpenAI's API as a wrong host: one whose base_url lacked /v1, or that called an API
    argus does not serve (images.edit, images.create_variation), had nothing else to go on."""
    if request.method == hdrs.METH_CONNECT:
        # it names a host:port to tunnel to (sent by a client whose HTTPS_PROXY names the engine, or by a scanner
        # looking for open proxies), which aiohttp routes as the path "": every one was a 404 "CONNECT  is not served
        # here", naming nothing
        target = cut_middle(request.raw_path, _PATH_CHARS, _PATH_CHARS // 2)
        return f"CONNECT {target}: argus is no proxy and opens no tunnels; {_SERVED}"
    said = f"{request.method} {cut_middle(request.path, _PATH_CHARS, _PATH_CHARS // 2)}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return f"{said}: this path takes {', '.join(sorted(exc.allowed_methods))}"
    if isinstance(exc, web.HTTPNotFound):
        return f"{said} is not served here: {_SERVED}"
    return exc.reason


_SERVED = (
    "argus serves OpenAI's image generation, POST /v1/images/generations (an OpenAI client's base_url ends in /v1),"
    " and GET /v1/models; not image edits or variations, nor OpenAI's other APIs (GET /openapi.json lists every route)"
)


# a front door's check of a request before anything else is read: its refusal, or None to let it in
Door = Callable[[web.Request], "web.Response | None"]


def _open_door(request: web.Request) -> None:
    return None


def _checked_at(door: Door):
    @web.middleware
    async def check(request: web.Request, handler):
        if (refused := door(request)) is not None:
            return refused
        return await handler(request)

    return check


@web.middleware
async def _expectations(request: web.Request, handler):
    """An Expect the engine cannot meet, refused once the door let the request in, as the request itself would be."""
    if (unmet := unmet_expectation(request)) is not None:
        return _refused_at_the_door(request, "expectation_failed", unmet)
    return await handler(request)


def _api_key_door(keys: ApiKeys, count_refusal: Callable[[], None]) -> Door:
    def check(request: web.Request) -> web.Response | None:
        # an image URL is a capability, as OpenAI's are: unguessable and short-lived, it can be handed to a
        # browser or another service that holds no key
        if request.path in _OPEN_PATHS or request.match_info.route.name == "image_file":
            return None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # the scheme is case-insensitive, and one or more spaces part it from the key (RFC 9110, 11.4; RFC 6750,
        # 2.1): clients and proxies send "bearer" too, and "Bearer  KEY" was a 401. No key starts with a space
        # (key_problem). aiohttp keeps bytes that are not UTF-8 as surrogates: encode them back, or such a header
        # would be a 500
        given = given.lstrip(" ")
        holder = keys.holder(given.encode("utf-8", "surrogateescape")) if scheme.lower() == "bearer" else None
        if holder is None:
            count_refusal()  # a client's key gone stale, or someone guessing: an operator's to see
            return _error(
                "unauthorized",
                "a valid API key is required (Authorization: Bearer KEY)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        request[KEY_HOLDER] = holder
        return None

    return check


def _loopback_host_door(public_host: str | None, count_refusal: Callable[[], None]) -> Door:
    """An engine on loopback without an API key answers only requests that name it by a loopback name or address, a
    name of one label (a proxy's upstream, a hosts-file name: none that DNS outside can answer for) or --public-url's
    host. A web page its user opens could otherwise drive it by DNS rebinding: a name of the page's made to resolve
    to 127.0.0.1, which the browser sends as the Host, spends the workers and reads /plan."""

    # a client sends the same Host with every request: parsing it each time cost 4 us of a 270 us request
    @functools.lru_cache(maxsize=64)
    def refused(host: str) -> bool:
        # HTTP/1.0 may leave the Host out, and a Host that does not parse (a port that is no number, an unclosed
        # bracket) is answered by the handlers (a 400 where it matters): no browser sends either. A name of other
        # characters than a URL's host is made of here is checked all the same: browsers take `$`, `!` or `*` in a
        # domain (WHATWG URL), and a wildcard DNS record answers for it. Let through, `a$b.attacker.example` was
        # served
        name = host_name(host)
        return bool(name) and not names_this_engine(name, public_host)

    def check(request: web.Request) -> web.Response | None:
        # an absolute-form target's host too, which the image URLs are made from: with the Host header alone checked,
        # `POST http://evil.example:1/...` with `Host: localhost` was served URLs on evil.example. Both are checked,
        # not the target's alone (as RFC 9112, 3.2.2 would read it): what reads the Host header is then never given
        # a name the engine refuses, and no browser sends either form but with the same host
        for where, host in named_hosts(request):
            if refused(host):
                count_refusal()
                return _error(
                    "host_not_allowed",
                    f"{where} {host!r} does not name this engine: without an API key, an engine on loopback answers"
                    " only localhost, a loopback address or a name of one label (a web page could otherwise reach it"
                    " by DNS rebinding). Behind a proxy, give --public-url; or set --api-key",
                )
        return None

    return check


async def generate(request: web.Request) -> web.Response:
    engine: Engine = request.app[ENGINE_KEY]
    # a web page may have a browser post a form, text/plain or an untyped body to any site without asking the site
    # first (CORS): taking only JSON keeps pages from spending this engine's workers through their visitors
    if request.content_type != "application/json":
        return _refused(request, "unsupported_media_type", "send the body as JSON, with Content-Type: application/json")
    # every line: aiohttp's C parser inflates by the last, and `identity` then `gzip` had the first read alone
    if _codings(request, hdrs.CONTENT_ENCODING) - {"identity"}:
        response = _refused(request, "unsupported_encoding", "send the JSON body uncompressed (no Content-Encoding)")
        # RFC 7694, section 3: which codings the request could have come in, none, so that a client that compressed
        # it can tell this 415 from one for the media type (which must not say so) and send it again uncompressed
        response.headers[hdrs.ACCEPT_ENCODING] = "identity"
        # aiohttp inflates the unread body as it reads it to its end, and closes the connection where it does not
        # inflate (a body said to be gzip that is none): said kept, it failed the client's next request, this one sent
        # again uncompressed
        response.force_close()
        return response
    if unknown := _codings(request, hdrs.TRANSFER_ENCODING) - {"chunked"}:
        # aiohttp refuses a chunked coding that is not the last (RFC 9112, 6.3) but passes on those before it
        # undecoded: the gzip under `gzip, chunked` was read as JSON, and answered a 400 "malformed JSON"
        return _refused(
            request,
            "unsupported_transfer_encoding",
            f"Transfer-Encoding {', '.join(sorted(unknown))} is not understood: send the JSON body as is, with"
            " Content-Length or Transfer-Encoding: chunked alone",
        )
    try:
        async with asyncio.timeout(BODY_READ_S):
            raw = await read_body(request, request.app[BODY_BUDGET_KEY])
    except BodiesFull as exc:  # its connection closed, as every 503's (engine/http/stopping.py)
        return _refused(request, "too_many_bodies", str(exc), headers={"Retry-After": "1"})
    except web.HTTPRequestEntityTooLarge as exc:  # answered by _json_errors
        engine.count_refusal(Error(request[REQUEST_ID], "body_too_large", exc.text or "request body too large"))
        raise
    except TimeoutError:
        response = _refused(request, "request_timeout", f"the request body did not come whole within {BODY_READ_S:g} s")
        response.force_close()  # the rest of the body may come yet: the connection can carry no other request
        return response
    except web.RequestPayloadError:
        # a chunk that does not parse (aiohttp's pure-Python parser fails the body with it, and so does
        # engine/http/parse_errors.py for its C parser). A 500 internal_error before, logged at ERROR with the
        # client's bytes
        response = _refused(request, MALFORMED, MALFORMED_BODY)
        response.force_close()  # where this message ends, and so the next one starts, is not known
        return response
    try:
        body = await asyncio.to_thread(parse_request, raw) if len(raw) > _INLINE_PARSE_BYTES else parse_request(raw)
        spec = to_generate(body, request_id=request[REQUEST_ID])
    except InvalidRequest as exc:
        return _refused(request, "invalid_request", str(exc), exc.param)
    origin = None
    if body.response_format == "url":
        try:  # before any work is done for it: without --public-url, the image URLs are made from the Host header
            origin = engine.config.public_url or request.app[PROXY_HINTS_KEY].origin(request)
        except ValueError as exc:
            reason = f"no image URL can be made from this Host header: {exc}"
            return _refused(request, "invalid_request", reason, "response_format")
    admitted = engine.submit(spec, _client_name(body.safety_identifier or body.user, request))
    if isinstance(admitted, Busy):
        # whole seconds, as HTTP takes them: the hint is (engine/dispatch/queue_pace.py)
        retry_s = retry_after_s(admitted.retry_after_ms / 1000)
        return _error("busy", _BUSY_MESSAGES[admitted.reason], headers={"Retry-After": str(retry_s)})
    if isinstance(admitted, Error):
        return _error(admitted.code, admitted.message, _ADMISSION_PARAMS.get(admitted.code))
    try:
        reply = await asyncio.shield(admitted.future)
    except asyncio.CancelledError:
        # the client went away: abort its images, queued or running. A reply made as it went (the handler cancelled
        # before it woke to it) is counted as made, as for a client that leaves while it is written: counted
        # cancelled, an error's code was hidden from the alerts on it
        made = admitted.future.done()
        if not made:
            engine.dispatcher.cancel(admitted)
        engine.count_reply(admitted, admitted.future.result() if made else Cancelled(spec.request_id))
        raise
    names, param = None, None
    if origin is not None and isinstance(reply, Images):
        try:
            names = engine.image_files.put([r.image for r in reply.images], body.output_format)
        except ImagesTooLarge as exc:
            reply, param = Error(spec.request_id, "invalid_request", str(exc)), "response_format"
    # counted before the images are encoded: a client that leaves meanwhile was answered, as one over ZeroMQ is
    engine.count_reply(admitted, reply)
    if isinstance(reply, Error):
        return _error(reply.code, reply.message, param or _FIELD_OF.get(reply.code), _retry_after(engine, reply.code))
    if isinstance(reply, Cancelled):
        # not shutting_down (refused at the door): this one was admitted, then cancelled at the drain's end
        return _error("cancelled", "the request was cancelled while the engine stopped")
    if names is None:
        return _b64_response(reply.images, body, admitted.width, admitted.height)
    route = request.app.router["image_file"]
    data = [
        image_data(r, url=origin + str(route.url_for(name=name))) for r, name in zip(reply.images, names, strict=True)
    ]
    return _json(images_response(data, body, admitted.width, admitted.height))


def _codings(request: web.Request, header: str) -> set[str]:
    """The codings the request's body came in, as `header` (Content-Encoding, Transfer-Encoding) lists them in all
    its lines (RFC 9110, 5.3), by name, without their parameters."""
    codings = (coding for value in request.headers.getall(header, ()) for coding in value.split(","))
    return {name for coding in codings if (name := coding.partition(";")[0].strip().lower())}


_BUSY_MESSAGES = {
    "queue_full": "the engine is at capacity; retry later",
    "client_share": "this client holds its share of the engine's queue while other clients wait for room; retry later",
}


def _refused_at_the_door(request: web.Request, code: str, message: str) -> web.Response:
    """A request refused before its route's handler ran: counted (as `_refused`) on the images path alone, where the
    series an operator alerts on counts requests for images."""
    if request.path == GENERATIONS_PATH:
        return _refused(request, code, message)
    return _error(code, message)


def _refused(
    request: web.Request, code: str, message: str, param: str | None = None, headers: dict | None = None
) -> web.Response:
    """A request refused before the engine saw it, counted and logged as the engine does those it refuses."""
    request.app[ENGINE_KEY].count_refusal(Error(request[REQUEST_ID], code, message))
    return _error(code, message, param, headers)


def _client_name(end_user: str | None, request: web.Request) -> str:
    """The client a request's share of the queue is counted for: the holder of its key, under --api-keys (what the
    request says of itself cannot make it another client's); else the end user a gateway names (OpenAI's
    `safety_identifier` replaced `user` and takes precedence over it unless empty: read alone, `user` counted every
    end user of a gateway that sends its own name there as one client), else the address the request came from. They
    are named apart: in one namespace, a `user` of "10.0.0.7" was counted as the client at that address, took its
    images for its own and had it refused for the share it did not hold."""
    if holder := request.get(KEY_HOLDER):
        return f"http-key:{holder}"
    return f"http-user:{end_user}" if end_user else f"http:{_client_address(request)}"


def _client_address(request: web.Request) -> str:
    proxies = request.app[PROXIES_KEY]
    peer = request.remote or ""
    if not proxies:
        return peer
    return proxies.client_address(peer, request.headers.getall(hdrs.X_FORWARDED_FOR, ()))


def _b64_response(results: list[ImageResult], body: ImageGenerationRequest, width: int, height: int) -> web.Response:
    if sum(len(r.image) for r in results) <= _B64_SLICE_BYTES:
        # a slice's worth is written whole, in one send: streamed, a 64x64 image's answer took the engine 10% more CPU
        data = [image_data(r, b64_json=binascii.b2a_base64(r.image, newline=False).decode()) for r in results]
        return _json(images_response(data, body, width, height))
    encoded = msgspec.json.encode(images_response([image_data(r, b64_json="") for r in results], body, width, height))
    length = len(encoded) + sum(4 * ((len(r.image) + 2) // 3) for r in results)
    return web.Response(
        body=_b64_body(encoded.split(_B64_SLOT), [r.image for r in results]),
        content_type="application/json",
        headers={hdrs.CONTENT_LENGTH: str(length)},
    )


async def _b64_body(around: list[bytes], images: list[bytes]) -> AsyncIterator[bytes]:
    """The answer's bytes: `around` the images' slots, each image's base64 in its own."""
    yield around[0]
    for image, after in zip(images, around[1:], strict=True):
        yield _B64_SLOT[:-1]
        view = memoryview(image)
        for start in range(0, len(view), _B64_SLICE_BYTES):
            yield binascii.b2a_base64(view[start : start + _B64_SLICE_BYTES], newline=False)
            await asyncio.sleep(0)  # the transport takes a slice without waiting while the client keeps up
        yield b'"' + after


async def image_file(request: web.Request) -> web.Response:
    files: ImageFiles = request.app[ENGINE_KEY].image_files
    found = files.get(request.match_info["name"])
    if found is None:
        # a 404 is cacheable unless it says otherwise (RFC 9110, 15.1): a CDN kept one of an image another engine behind
        # the same balancer made (Cloudflare keeps a .png's 3 minutes), and no retry reached the engine holding it
        message = files.missing_message(request.match_info["name"])
        return _error("not_found", message, headers={"Cache-Control": "no-store"})
    # without a lifetime of its own, a 200 may be kept by any cache on the way for as long as it likes (RFC 9111
    # 4.2.2; a CDN keeps images for hours by default): the image outlived its TTL there, and stayed at a URL
    # that is its only key for everyone who could reach the cache. A browser may keep it until it expires here
    cache_control = f"private, max-age={int(found.seconds_left)}"
    return web.Response(body=found.data, content_type=found.content_type, headers={"Cache-Control": cache_control})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive", "version": argus_version()})


async def ready(request: web.Request) -> web.Response:
    engine: Engine = request.app[ENGINE_KEY]
    status = readiness(engine)
    return web.json_response(status, status=200 if status["ready"] else 503)


async def metrics(request: web.Request) -> web.Response:
    engine: Engine = request.app[ENGINE_KEY]
    return web.Response(body=engine.metrics.render(), content_type="text/plain", charset="utf-8")


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_KEY], content_type="application/json")


async def models(request: web.Request) -> web.Response:
    """For OpenAI clients and tools that list models before they ask for images."""
    return _json(ModelList([request.app[MODEL_KEY]]))


async def model(request: web.Request) -> web.Response:
    served = request.app[MODEL_KEY]
    if (asked := request.match_info["model"]) != served.id:
        named = cut_middle(asked, _PATH_CHARS, _PATH_CHARS // 2)
        return _error("model_not_found", f"no model {named!r}: this engine serves one model, {served.id!r}", "model")
    return _json(served)


async def plan(request: web.Request) -> web.Response:
    engine: Engine = request.app[ENGINE_KEY]
    current = engine.control_loop.plan_json()
    if current is None:
        return _error("no_plan", "the controller has not made a plan yet")
    return web.json_response(current)
