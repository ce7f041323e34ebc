"""A bound on the HTTP connections open at once (--max-connections): past it, a new connection is answered 503 and
closed at once, and the engine keeps the descriptors it needs for its workers and files.

aiohttp takes every connection the kernel hands it, and each holds a descriptor for as long as its client keeps it
(idle between requests, or sending its headers a byte at a time, for up to --keepalive-timeout). One client opening
connections as fast as it could took the engine's last descriptor: from then on the engine could not start a worker
again ("could not start worker local-0: Too many open files", retried for ever), take a worker's or a ZeroMQ client's
connection, spill or save its cache, nor answer any HTTP request, not even /health, and logged nothing of it. The
bound leaves what the engine needs besides its connections (engine/open_files.py). Telling clients apart, so that
one cannot take every connection of the bound, is a reverse proxy's job (nginx's limit_conn): behind one, every
connection comes from the proxy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec

from engine.plurals import counted
from engine.protocol_layer import ProtocolLayer
from engine.quiet_lines import QuietLines
from protocols.openai_images import error_response

log = logging.getLogger("argus.http")

# refusals are logged at most this often: a client opening connections in a loop is refused thousands of times a second
_LOG_EVERY_S = 60.0


def _refusal(limit: int) -> bytes:
    """The whole answer to a connection over the bound, written before its request is read: a 503 the OpenAI clients
    retry, closing the connection."""
    message = f"the engine holds {counted(limit, 'HTTP connection')}, its bound (--max-connections): retry later"
    body = msgspec.json.encode(error_response(message, "too_many_connections", 503))
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ConnectionLimit:
    def __init__(self, limit: int, refused: Callable[[], None]):
        """`refused`: called for each connection refused (a metric's inc)."""
        self.limit = limit
        self.open = 0
        self._refused = refused
        self._answer = _refusal(limit)
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
                "refused an HTTP connection: %d are open, the bound (--max-connections)%s",
                self.open,
                f"; {left_out} more refused since the last such line" if left_out else "",
            )
        return self._answer

    def release(self) -> None:
        self.open -= 1


class _Counted(ProtocolLayer):
    """Counts its connection while it is open, or, over the bound, answers it and closes it before aiohttp sees it.
    Admitted at connection_made, not as it is made: a protocol made for a connection that then failed to be set up
    would have been counted for ever."""

    def __init__(self, limit: ConnectionLimit, inner: asyncio.Protocol) -> None:
        super().__init__(inner)
        self._limit = limit
        self._admitted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        refusal = self._limit.admit()
        if refusal is not None:
            transport.write(refusal)
            transport.close()  # its descriptor is let go of once the answer is written, not held as the client likes
            return  # closed: no event but the loss comes, and none reaches aiohttp
        self._admitted = True
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._limit.release()
            super().connection_lost(exc)
