"""A request that failed on a pooled HTTP connection the server had closed as idle, sent again on a new one.

A server closes a connection left idle past its keep-alive timeout (argus's --keepalive-timeout). A pooled client that
takes such a connection from its pool just as the server closes it (the server's FIN not yet come) sends its request
into a closed socket: the request fails before any answer, ServerDisconnectedError or a reset, the server having read
none of it. aiohttp sends such a request again on a new connection only for idempotent methods, never a POST; the load
generator counted it a connection_error of the engine's (10 of 200 POSTs sent within 30 ms of an engine's 3 s
keep-alive timeout, aiohttp's pool keeping connections 15 s).

Sent again only when it failed so on a connection taken from the pool (aiohttp's public trace of a connection reused):
one that fails on a connection of its own is the engine's failure, and counted. A server that took the request and
then died on a reused connection has it sent again too: that one meets the engine gone (refused), or, restarted,
serves it; the first is cancelled with the connection (docs/http-api.md, a client that goes away).
"""

from __future__ import annotations

import errno
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

# how a request into a connection the server has closed fails, before any answer
_CLOSED_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE})
# sends past the first: each connection that failed leaves the pool, and the connections that idled as long were closed
# with it, which the pool finds closed (the race is the few ms the server's FIN takes to come)
_MORE_SENDS = 2


class _Sent:
    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


async def _on_reuse(session: aiohttp.ClientSession, context: Any, params: Any) -> None:
    # a request of the session not sent by `post` has no _Sent to mark (it raised AttributeError on a reused connection)
    if isinstance(context.trace_request_ctx, _Sent):
        context.trace_request_ctx.reused = True


def pooled_session(**kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session whose requests, sent with `post`, know whether their connection came from its pool."""
    reuses = aiohttp.TraceConfig()
    reuses.on_connection_reuseconn.append(_on_reuse)
    return aiohttp.ClientSession(trace_configs=[reuses], **kwargs)


def _closed_while_idle(exc: aiohttp.ClientConnectionError, sent: _Sent) -> bool:
    if not sent.reused:
        return False
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True
    # a reset or a broken pipe as the request was written: aiohttp's ClientOSError "Can not write request body" (errno
    # None) over a write to the transport it had seen closed, or over the socket's own error
    return any(
        isinstance(error, (ConnectionResetError, BrokenPipeError)) or getattr(error, "errno", None) in _CLOSED_ERRNOS
        for error in (exc, exc.__cause__)
    )


async def post(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, CIMultiDictProxy[str], bytes]:
    """POST to `url` over `session` (a `pooled_session`): the answer's status, headers and body."""
    more = _MORE_SENDS
    while True:
        sent = _Sent()
        try:
            async with session.post(url, trace_request_ctx=sent, **kwargs) as response:
                return response.status, response.headers, await response.read()
        except aiohttp.ClientConnectionError as exc:
            if not more or not _closed_while_idle(exc, sent):
                raise
            more -= 1
