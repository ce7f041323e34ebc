"""HTTP answers after which a client should try another engine close their connections: each of a stopping engine,
and every 503 (this engine cannot serve the request now).

An OpenAI client retries a 503 (twice by default) on the connection its pool keeps alive. Behind a load balancer that
ties each connection to one engine (a Kubernetes Service, any layer-4 balancer), every retry reached the same engine
again, while the other engines behind it served: a draining engine answered each one `shutting_down`, and the request
failed through a rolling restart; one without workers had each retry wait another minute for `no_worker`. Closed, the
connection is opened anew for the retry, and the balancer routes it to an engine that may serve it. An answer a
stopping engine makes to the work in flight closes its connection too: the client's next request goes where the
balancer sends it. A 429 keeps its connection: the engine holds room for a client it refused for want of it
(engine/dispatch/client_shares.py), which it would keep for nothing if the retry went elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.http.expect import body_left_unread
from engine.http.request_ids import Handler


def closing_connections(running: Callable[[], bool]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """A middleware closing the connection of each 503, of each answer made while `running()` is false, and of each
    whose request's body is left unread (engine/http/expect.py): one middleware for all three, as each is a frame on
    every request's path."""

    @web.middleware
    async def close(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if response.status == 503 or not running() or body_left_unread(request):
            response.force_close()
        return response

    return close
