"""A bound on a request's head (its request line and headers together): MAX_HEAD_BYTES (protocols/limits.py). An
HTTP connection holding an unfinished head past it is answered 431 and closed (HeadLimit); a whole head past it is
answered 431 by the application (`head_bounded`), as the other refusals before a route's handler are.

aiohttp bounds a head's lines (8,190 bytes each) and its headers (128), not their sum, and keeps each header twice as
it is parsed (its bytes and its text): a client that sent 120 headers of 8,000 bytes and never the blank line that
ends them held 1.2 to 1.9 MB of the engine's memory per connection until --keepalive-timeout. One client holding 1,000
such connections took an engine of sim workers from 0.45 to 1.66 GB (the allocator kept it after they closed); at the
default --max-connections, 18,972 under a limit of 20,000 open files, that is past 24 GB, no API key needed: the
headers are read before it is checked. nginx holds a head to 32 KB (large_client_header_buffers), Node.js to 16 KB.

aiohttp's C parser says nothing of where it is in a message, so a head's bytes are counted from what it made of
them: bytes that came after the last head aiohttp made whole, less those it took into that request's body. They are
the next head's, or that body's chunked framing and trailer fields, which aiohttp keeps as it keeps headers: they are
held to the same bound (a 1 MiB body in chunks of 100 bytes has 70 KB of framing; real clients' chunks are KBs). Once
a head is whole, what came with it is counted against the next message (an overcount by that head and pipelined
requests' heads: a normal client's are far below the bound). What comes while aiohttp has paused reading for a body
its handler has not read yet waits unparsed in its parser: a body's bytes, mostly, not counted (at most a read's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

import msgspec
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from engine.http.connection_limit import LINGER_S
from engine.http.protocol_layer import ProtocolLayer
from engine.http.request_ids import HEADER, request_ids
from protocols.limits import MAX_HEAD_BYTES
from protocols.openai_images import error_response

request_log = logging.getLogger("argus.requests")
log = logging.getLogger("argus.http")

# what HeadLimit reads of aiohttp's RequestHandler, none of it public: an aiohttp without one of them is served without
# the bound (said once at start) rather than with a count that never sees a head made whole, which would refuse every
# keep-alive connection once 64 KiB had passed on it
_AIOHTTP_STATE = ("_request_count", "_messages", "_current_request", "_waiter", "_reading_paused")

# how often a connection refused behind an answer aiohttp owes looks again whether it is written
_BUSY_LOOK_S = 0.05

_MESSAGE = (
    f"the request's line and header fields (a chunked body's trailer fields and framing with them) are over"
    f" {MAX_HEAD_BYTES // 1024} KiB together, the engine's bound: send fewer or shorter headers"
)


def _refusal(request_id: str) -> bytes:
    """The whole answer to a head over the bound: a 431 that closes the connection, under an id of the engine's (the
    client's own is in the head not read)."""
    body = msgspec.json.encode(error_response(_MESSAGE, "headers_too_large", 431))
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
        f"{HEADER}: {request_id}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class HeadLimit(ProtocolLayer):
    """Stands between a connection's transport and aiohttp's protocol (its RequestHandler, whose state it reads),
    passing all on until the head aiohttp holds unfinished is over MAX_HEAD_BYTES."""

    def __init__(self, aiohttp_protocol: asyncio.Protocol, ids: Iterator[str]) -> None:
        super().__init__(aiohttp_protocol)
        self._ids = ids
        self._heads = 0  # heads aiohttp had made whole when last looked at
        self._body = None  # the body of the last of them, aiohttp's StreamReader
        self._held = 0  # bytes of the next head aiohttp holds, at most
        self._refused = False

    def data_received(self, data: bytes) -> None:
        # a read may be 256 KiB: handed to aiohttp whole, it was parsed into memory before it was counted
        for start in range(0, len(data), MAX_HEAD_BYTES):
            if self._refused:
                return  # read and dropped until the connection closes
            if self._inner._reading_paused:
                # paused for a body its handler has not read (128 KiB waiting): aiohttp keeps what it is given unparsed
                # until the handler reads on, and parses it then, not through here. The rest of the read goes whole,
                # as it would without this layer, uncounted: at most a read's 256 KiB, once per pause
                super().data_received(data[start:])
                return
            self._take(data[start : start + MAX_HEAD_BYTES])

    def _take(self, data: bytes) -> None:
        body = self._body
        taken = body.total_bytes if body is not None else 0
        super().data_received(data)
        heads = self._inner._request_count
        if heads != self._heads:  # a head came whole in these bytes: what else came is the next message's, at most
            self._heads, self._body, self._held, taken = heads, self._newest_body(), 0, 0
            body = self._body
        if self._inner._reading_paused:
            # paused in these bytes: what of them the body did not take waits unparsed in aiohttp's parser, a chunked
            # body's next chunks (counted as a head's, a chunked body sent faster than its handler read it was refused)
            return
        # what aiohttp did not take into a body: a head's bytes, or a chunked body's framing and trailer fields (which
        # aiohttp keeps as it keeps headers: 120 of 8 KB after the last chunk held 1.8 MB until the 408, 30 s on)
        self._held += len(data) - ((body.total_bytes if body is not None else 0) - taken)
        if self._held > MAX_HEAD_BYTES:
            self._refuse()

    def _newest_body(self):
        """The body of the request whose head aiohttp made whole last: queued, or being handled."""
        queued = self._inner._messages
        if queued:
            return queued[-1][1]
        handled = self._inner._current_request
        return handled.content if handled is not None else None

    def _refuse(self) -> None:
        self._refused = True
        self._answer(asyncio.get_running_loop().time() + LINGER_S)

    def _answer(self, deadline: float) -> None:
        """The 431, once aiohttp owes no earlier answer on the connection: one written as it writes an answer, or
        before an answer it is about to write, would land inside it. Past `deadline`, the connection is reset."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        if not self._idle():
            if loop.time() < deadline:
                loop.call_later(_BUSY_LOOK_S, self._answer, deadline)
            else:
                transport.abort()
            return
        request_id = next(self._ids)
        request_log.debug("request %r refused headers_too_large: %s", request_id, _MESSAGE)
        transport.write(_refusal(request_id))
        # as a connection over --max-connections is let go of (engine/http/connection_limit.py): closed at once,
        # the bytes its client still sends would be answered with a reset that could overtake the 431
        transport.write_eof()
        loop.call_later(LINGER_S, transport.close)

    def _idle(self) -> bool:
        """Whether aiohttp owes no answer on the connection: no head made whole yet, or waiting for the next (not
        merely none being handled: a request taken from aiohttp's queue is handled a loop turn later)."""
        waiter = self._inner._waiter
        return self._heads == 0 or (waiter is not None and not waiter.done())


def head_limit(make_aiohttp_protocol: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for loop.create_server, from aiohttp's (a runner's `server`)."""
    missing = [name for name in _AIOHTTP_STATE if not hasattr(RequestHandler, name)]
    if missing:
        log.warning(
            "HTTP heads are not bounded to %d KiB: this aiohttp's RequestHandler has no %s",
            MAX_HEAD_BYTES // 1024,
            ", ".join(missing),
        )
        return make_aiohttp_protocol
    ids = request_ids()
    return lambda: HeadLimit(make_aiohttp_protocol(), ids)


def _head_bytes(request: web.BaseRequest) -> int:
    """The request's line and headers, counted as HTTP/1.1 writes them: "METHOD TARGET HTTP/1.1", each "Name: value",
    each line's CRLF and the blank line's."""
    line = len(request.method) + len(request.raw_path) + len(" HTTP/1.1\r\n") + 1
    return line + sum(len(name) + len(value) + 4 for name, value in request.raw_headers) + 2


def head_bounded(refuse: Callable[[web.Request, str, str], web.StreamResponse]):
    """A middleware answering refuse(request, code, message) to a request whose whole head is over the bound: one
    that came within a read of its end was parsed whole before HeadLimit counted past the bound. The connection is
    closed, as HeadLimit's 431 closes it: kept (a GET's, whose body there was none to leave unread), a client that
    sent such a head sent the next over it too, each parsed whole before it was refused again."""

    @web.middleware
    async def bounded(request: web.Request, handler):
        if _head_bytes(request) > MAX_HEAD_BYTES:
            response = refuse(request, "headers_too_large", _MESSAGE)
            response.force_close()
            return response
        return await handler(request)

    return bounded
