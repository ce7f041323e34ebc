"""A stopping engine's HTTP answers close their connections, as servers do in a graceful stop.

An OpenAI client retries a 503 `shutting_down` (twice by default) on the connection its pool keeps alive. Behind a
load balancer that ties each connection to one engine (a Kubernetes Service, any layer-4 balancer), every retry
reached the draining engine again and was answered `shutting_down`, while the other engines behind it served: the
request failed through a rolling restart. Closed, the connection is opened anew for the retry, and the balancer routes
it to an engine still serving. The same goes for an answer made during the drain (the work in flight finishing): the
client's next request opens a connection of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def close_when_stopping(running: Callable[[], bool]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """A middleware closing the connection of each answer made while `running()` is false."""

    @web.middleware
    async def close(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if not running():
            response.force_close()
        return response

    return close
