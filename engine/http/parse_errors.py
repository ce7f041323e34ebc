"""A message aiohttp's parser refuses (a bad request line or header, over 128 headers, a line over 8,190 bytes, a bad
chunk) answered in the API's JSON error shape, as every other error is, under an X-Request-ID of the engine's.

aiohttp answers these before any of the engine's code runs, with a plain-text 400 (its parser's words and the bytes
it choked on): a client of the OpenAI API found no `error` in the body, and a head too large for aiohttp was a 400
where one too large for the engine's own bound (engine/http/head_limit.py) is a 431. aiohttp offers no public hook for
them (aio-libs/aiohttp#3287, open since 2018; a middleware never sees them): its RequestHandler answers each with
its `handle_error`, which a subclass made by the same arguments aiohttp's Server makes its own by overrides (an
aiohttp whose RequestHandler takes other arguments is served as is, its plain text, said once at start).

Its C parser, the usual one, also meets a bad chunk of a body being read that way: it queues the error as the next
message and leaves the body unfinished, so the request's handler waited out the body's 30 s for a 408, the 400 never
written (aiohttp's Python parser fails the body with it). The body is failed here as the Python parser fails it, so
the handler answers it at once, whatever segments its head and the bad chunk came in. That reads aiohttp's queue of
parsed messages, none of it public: an aiohttp without it is served without this (said once at start), a bad chunk
answered 408 as before.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from engine.http.request_ids import HEADER, request_ids
from protocols.openai_images import error_response

request_log = logging.getLogger("argus.requests")
log = logging.getLogger("argus.http")

# what failing a body read the C parser's way needs of aiohttp's RequestHandler, none of it public
_AIOHTTP_STATE = ("_messages",)
# aiohttp's words for a head of more than its max_headers, a BadHttpMessage like any other: its text tells it apart (in
# other words, it would be answered a 400 malformed_request, as every other message aiohttp cannot parse)
_TOO_MANY_HEADERS = "Too many headers received"

MALFORMED = "malformed_request"
MALFORMED_BODY = (
    "the request body is not valid HTTP/1.1 framing (a chunk of Transfer-Encoding: chunked that does not parse)"
)


def _refusal(exc: HttpProcessingError, max_line_bytes: int, max_headers: int) -> tuple[int, str, str]:
    """The status, code and message a message aiohttp could not parse is answered with."""
    if isinstance(exc, LineTooLong):
        # a request line (its target) so long is no request to this API either: one status for a head's lines
        what = f"a line of the request's head (the request line or a header field) is over {max_line_bytes} bytes"
        return 431, "headers_too_large", f"{what}, the engine's bound: send shorter ones"
    if exc.message == _TOO_MANY_HEADERS:
        return 431, "headers_too_large", f"the request has over {max_headers} header fields, the engine's bound"
    if isinstance(exc, BadHttpMethod) and exc.message.startswith("Received HTTPS"):
        return 400, MALFORMED, "TLS was sent to the engine's plain HTTP port: use http://, or a TLS proxy before it"
    # aiohttp's words for what it met, its first line ("Invalid header token:"), not the bytes quoted after it
    said = exc.message.strip().splitlines()[0].rstrip(":") if exc.message.strip() else type(exc).__name__
    return 400, MALFORMED, f"the request is not HTTP/1.1 the engine can parse: {said}"


class _JsonParseErrors(RequestHandler):
    __slots__ = ("_latest_body",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the body of the latest request parsed, the one a chunk that does not parse belongs to if it is not whole
        self._latest_body: Any = None

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):  # a handler's failure: aiohttp's own answer
            return super().handle_error(request, status, exc, message)
        status, code, said = _refusal(exc, self.max_field_size, self.max_headers)
        request_id = next(_IDS)
        # the client's error, not the engine's: aiohttp logged it at ERROR with a traceback quoting the client's bytes
        request_log.debug(
            "request %r from %s refused %s (%s): %s", request_id, request.remote, code, type(exc).__name__, said
        )
        body = msgspec.json.encode(error_response(said, code, status))
        response = web.Response(body=body, status=status, content_type="application/json", headers={HEADER: request_id})
        response.force_close()  # where this message ends, and so the next one starts, is not known
        return response

    def data_received(self, data: bytes) -> None:
        if not _BODIES_FAILED:
            super().data_received(data)
            return
        # the C parser drops a head parsed in the segment whose body then fails to parse, and the message is refused
        # whole, never counted: the same request with its bad chunk in a later segment was a request refused and
        # counted. Fed apart, the head is a request whatever the segments (a split in a body changes nothing)
        head_ends = data.find(b"\r\n\r\n") + 4
        if 3 < head_ends < len(data):
            self._fed(data[:head_ends])
            data = data[head_ends:]
        self._fed(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._latest_body = None
        super().connection_lost(exc)

    def _fed(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        for message, body in itertools.islice(self._messages, queued, None):
            # aiohttp's _ErrInfo for a message it could not parse, or a request parsed (which has no `exc`)
            error = getattr(message, "exc", None)
            if isinstance(error, HttpProcessingError):
                self._fail_latest_body(error)
            else:
                self._latest_body = body

    def _fail_latest_body(self, error: HttpProcessingError) -> None:
        # the body being read when the parser failed: the latest request's, queued, being handled, or between the
        # two (taken from the queue, its handler not yet run: a bad chunk that came then was waited on for the 408)
        body, self._latest_body = self._latest_body, None
        if body is not None and not body.is_eof():
            failure = web.RequestPayloadError(MALFORMED_BODY)
            failure.__cause__ = error  # as the Python parser's: what its log filter (engine/http/api.py) tells apart
            body.set_exception(failure)


_IDS = request_ids()
_BODIES_FAILED = all(hasattr(RequestHandler, name) for name in _AIOHTTP_STATE)


def json_parse_errors(server: web.Server, handler_args: dict[str, Any]) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for loop.create_server, in place of aiohttp's `server` (a runner's): `handler_args` are the
    RequestHandler's arguments the runner was given (keepalive_timeout, logger, ...)."""
    if not _BODIES_FAILED:
        missing = [name for name in _AIOHTTP_STATE if not hasattr(RequestHandler, name)]
        log.warning(
            "a bad chunk of a request body is answered only after 30 s: this aiohttp's RequestHandler has no %s",
            ", ".join(missing),
        )
    loop = asyncio.get_running_loop()
    # made as aiohttp's Server makes its own: an aiohttp whose RequestHandler takes other arguments is served as is
    try:
        _JsonParseErrors(server, loop=loop, **handler_args)
    except TypeError as error:
        log.warning("messages HTTP cannot parse are answered in aiohttp's plain text: %s", error)
        return server
    return lambda: _JsonParseErrors(server, loop=loop, **handler_args)
