"""Connections whose client half-closes them once its request is sent (socket.shutdown(SHUT_WR): `nc -N`, scripts,
some tools): it is done sending and reads on for the answer.

aiohttp takes the end of a client's input for the connection's loss (`RequestHandler.eof_received` returns nothing,
so asyncio closes the transport; aio-libs/aiohttp#3659, open): the handler was cancelled and nothing written back,
though the client was still reading. Nor can a server tell such a client from one that closed its socket for good:
both send the same FIN. Only a write tells them apart: a socket closed for good answers data with a reset, and the
next write fails. So, while a request whose message came whole is handled on a half-closed connection, the
connection writes an interim `100 Continue` every `PROBE_INTERVAL_S`: a client still reading skips it (HTTP/1.1
clients must parse a 1xx they did not ask for: RFC 9110, 15.2), and one gone makes the next write fail, which
aiohttp takes for the connection's loss, cancelling the handler as before. HTTP/1.0 forbids a 1xx: a request in it
whose client half-closes is taken for gone, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import HttpVersion11, web

from engine.http.protocol_layer import ProtocolLayer

# aiohttp writes the same bytes for Expect: 100-continue
PROBE = b"HTTP/1.1 100 Continue\r\n\r\n"
# how long a client that closed its connection (not reset it) may keep its images running, plus a round trip
PROBE_INTERVAL_S = 0.5


class HalfCloseAware(ProtocolLayer):
    """Stands between a connection's transport and aiohttp's protocol, passing all on but the end of the input."""

    def __init__(self, aiohttp_protocol: asyncio.Protocol) -> None:
        super().__init__(aiohttp_protocol)
        self._request: web.BaseRequest | None = None  # the one aiohttp is handling, if any
        self._aiohttp: object = None  # aiohttp's protocol, once a request handled has named it
        self._input_ended = False
        self._probe: asyncio.TimerHandle | None = None
        self.half_closed = False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_probing()
        super().connection_lost(exc)

    def eof_received(self) -> bool:
        if not self._input_ended:  # asyncio reads again if aiohttp resumes reading, and finds the end again
            self._input_ended = True
            # the handler of the request the end of input came after may be yet to start: on Python 3.11 aiohttp
            # starts it two callbacks after the bytes that completed the request (one wakes the connection's task,
            # which makes the handler's), and uvloop may hand those bytes and the end of input in one callback.
            # Callbacks run in order: two from here, every request that came before the end has its handler started
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._settle)
        return True  # keep the transport open: _settle closes it unless an answer is owed

    def _settle(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        if self._request is not None and _probe_allowed(self._request):
            self.half_closed = True
            self._send_probe()
        elif self._request is None and _requests_waiting(self._aiohttp):
            self.half_closed = True  # between two requests the client sent without waiting: probed as each starts
        else:
            # idle, or a message cut short: closed, as asyncio closes a transport whose protocol lets the input end
            self._transport.close()

    def _send_probe(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(PROBE)
        self._probe = asyncio.get_running_loop().call_later(PROBE_INTERVAL_S, self._send_probe)

    def _stop_probing(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    def handling(self, request: web.BaseRequest) -> None:
        self._request = request
        self._aiohttp = request.protocol
        if not self.half_closed:
            return
        # one the client sent before it half-closed, after others
        if not request.content.is_eof() and self._transport is not None:
            # its body was cut short by the end of the input, and cannot come whole: closed, as a lone one is (_settle).
            # Read on, it was answered a 408 once the body's 30 s ran out, the connection held meanwhile
            self._transport.close()
        elif _probe_allowed(request):
            self._send_probe()

    def handled(self) -> None:
        # before aiohttp writes the response: a 1xx after its first byte would corrupt it
        self._request = None
        self._stop_probing()


def _probe_allowed(request: web.BaseRequest) -> bool:
    """Whether the request came whole and its client may be sent a 1xx (RFC 9110, 15.2: not to HTTP/1.0)."""
    return request.version >= HttpVersion11 and request.content.is_eof()


def half_close_aware(make_aiohttp_protocol: Callable[[], asyncio.Protocol]) -> Callable[[], HalfCloseAware]:
    """A protocol factory for loop.create_server, from aiohttp's (a runner's `server`)."""
    return lambda: HalfCloseAware(make_aiohttp_protocol())


@web.middleware
async def answer_half_closed(request: web.Request, handler):
    """Tells a connection which request it handles; on one its client half-closed, the response closes it after
    (aiohttp would wait its keep-alive timeout for a next request that cannot come)."""
    connection = request.transport.get_protocol() if request.transport is not None else None
    if not isinstance(connection, HalfCloseAware):  # served by another server (aiohttp's test client)
        return await handler(request)
    connection.handling(request)
    try:
        response = await handler(request)
    finally:
        connection.handled()
    if connection.half_closed and not _requests_waiting(request.protocol):
        response.force_close()
    return response


def _requests_waiting(aiohttp_protocol: object) -> bool:
    """Whether aiohttp has read requests on this connection that it has yet to handle: HTTP/1.1 lets a client send
    its next request without waiting for the answer to the last (pipelining), then half-close. Each is owed its
    answer: the connection was closed after the first, the others left unanswered. aiohttp queues the requests it has
    read and not handled in `_messages`, which it does not make public (3.9 to 3.14 alike)."""
    return bool(getattr(aiohttp_protocol, "_messages", ()))
