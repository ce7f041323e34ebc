"""A bound on the HTTP connections open at once (--max-connections): past it, a new connection is answered 503 and
closed, and the engine keeps the descriptors it needs for its workers and files.

aiohttp takes every connection the kernel hands it, and each holds a descriptor for as long as its client keeps it
(idle between requests, or sending its headers a byte at a time, for up to --keepalive-timeout). One client opening
connections as fast as it could took the engine's last descriptor: from then on the engine could not start a worker
again ("could not start worker local-0: Too many open files", retried for ever), take a worker's or a ZeroMQ client's
connection, spill or save its cache, nor answer any HTTP request, not even /health, and logged nothing of it. The
bound leaves what the engine needs besides its connections (engine/system/open_files.py). Telling clients apart, so that
one cannot take every connection of the bound, is a reverse proxy's job (nginx's limit_conn): behind one, every
connection comes from the proxy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec

from engine.http.protocol_layer import ProtocolLayer
from engine.http.request_ids import HEADER, request_ids
from engine.logs.plurals import counted
from engine.logs.quiet_lines import QuietLines
from protocols.openai_images import error_response

log = logging.getLogger("argus.http")
request_log = logging.getLogger("argus.requests")

# refusals are logged at most this often: a client opening connections in a loop is refused thousands of times a second
_LOG_EVERY_S = 60.0
# a refused connection is closed once its client has closed its side, or after this long, its input read and dropped
# meanwhile. Closed as soon as the 503 was written, the kernel answered what the client sent after with a reset: an HTTP
# client writes a POST's body after its headers, and that write failed (a broken pipe, a connection reset), so that it
# never read the 503 nor its Retry-After
LINGER_S = 2.0
# refused connections kept so at once, at most: past them, one is closed as soon as its 503 is written. Bounded, a flood
# of connections holds no more than these of the descriptors the bound leaves the engine (engine/system/open_files.py
# SPARE_OPEN_FILES, 1,024)
MAX_LINGERING = 64


def _message(limit: int) -> str:
    return f"the engine holds {counted(limit, 'HTTP connection')}, its bound (--max-connections): retry later"


def _refusal(limit: int, request_id: str) -> bytes:
    """The whole answer to a connection over the bound, written before its request is read: a 503 the OpenAI clients
    retry, closing the connection. Under an id of the engine's, as every reply says one (engine/http/request_ids.py):
    the client's own is not read. Without it, the OpenAI client's error had no request_id to match a log line by."""
    body = msgspec.json.encode(error_response(_message(limit), "too_many_connections", 503))
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        f"{HEADER}: {request_id}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ConnectionLimit:
    def __init__(self, limit: int, refused: Callable[[], None]):
        """`refused`: called for each connection refused (a metric's inc)."""
        self.limit = limit
        self.open = 0
        self._lingering = 0  # refused connections not closed yet (LINGER_S)
        self._refused = refused
        self._request_ids = request_ids()
        self._lines = QuietLines(_LOG_EVERY_S)

    def protocols(self, make_protocol: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for loop.create_server, from the one it bounds (aiohttp's, wrapped)."""
        return lambda: _Counted(self, make_protocol())

    def admit(self) -> bytes | None:
        """None: a connection admitted, counted until it is released; else the answer to write it before closing it."""
        if self.open < self.limit:
            self.open += 1
            return None
        self._refused()
        left_out = self._lines.due("refused")
        if left_out is not None:
            log.warning(
                "refused an HTTP connection: %s open, the bound (--max-connections)%s",
                counted(self.open, "connection"),
                f"; {left_out} more refused since the last such line" if left_out else "",
            )
        request_id = next(self._request_ids)
        # as the front doors' refusals are said (Engine.count_refusal), not counted in argus_requests_total: no
        # request was read
        request_log.debug("request %r refused too_many_connections: %s", request_id, _message(self.limit))
        return _refusal(self.limit, request_id)

    def release(self) -> None:
        self.open -= 1

    def may_linger(self) -> bool:
        """Whether a refused connection may be kept to read what its client sends yet (counted until let go)."""
        if self._lingering >= MAX_LINGERING:
            return False
        self._lingering += 1
        return True

    def let_go(self) -> None:
        self._lingering -= 1


class _Counted(ProtocolLayer):
    """Counts its connection while it is open, or, over the bound, answers it and closes it before aiohttp sees it.
    Admitted at connection_made, not as it is made: a protocol made for a connection that then failed to be set up
    would have been counted for ever."""

    def __init__(self, limit: ConnectionLimit, inner: asyncio.Protocol) -> None:
        super().__init__(inner)
        self._limit = limit
        self._admitted = False
        self._closing: asyncio.TimerHandle | None = None  # a refused connection's, while it lingers

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        refusal = self._limit.admit()
        if refusal is None:
            self._admitted = True
            super().connection_made(transport)
            return
        transport.write(refusal)
        if not self._limit.may_linger():
            transport.close()
            return  # closed: no event but the loss comes, and none reaches aiohttp
        # its descriptor is let go of once the client has read the answer and closed, not held as the client likes: the
        # half-close layer, outermost, closes a connection whose input has ended and that owes no answer
        transport.write_eof()
        self._closing = asyncio.get_running_loop().call_later(LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._limit.release()
            super().connection_lost(exc)
        elif self._closing is not None:
            self._closing.cancel()
            self._limit.let_go()
