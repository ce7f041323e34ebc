"""`Keep-Alive: timeout=N` on every answer that keeps its connection open: how long the engine keeps it idle
(--keepalive-timeout), so that a client that reads it retires the connection before the engine closes it.

A pooled client that sends a request on an idle connection as the engine closes it at --keepalive-timeout has the
request fail (a reset, aiohttp's ServerDisconnectedError), the engine having never read it: an HTTP/1.1 race any
server's idle timeout has, at worst when a client keeps idle connections longer than the server (Go's 90 s against
the default 75 s, or any client against an engine run with --keepalive-timeout under its pool's). Node.js servers send
this header for it, and Node's fetch (undici) retires a connection a second or two before the
timeout it names; Python's clients do not read it (argus's own retry such a request instead: loadgen/stale_retry.py).
"""

from __future__ import annotations

import math

from aiohttp import hdrs, web


def advertise_keep_alive(app: web.Application, timeout_s: float) -> None:
    # whole seconds, as the header has them, rounded down: a client told more would reuse a connection already closed
    said = f"timeout={math.floor(timeout_s)}"

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        kept = response.keep_alive if response.keep_alive is not None else request.keep_alive
        if kept:
            response.headers[hdrs.KEEP_ALIVE] = said

    app.on_response_prepare.append(on_prepare)
