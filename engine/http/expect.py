"""HTTP's Expect header (RFC 9110, 10.1.1), met by the engine rather than by aiohttp.

aiohttp meets a route's expectation before any middleware runs: it asked for the body (`100 Continue`) before the
API key, the Host (engine/http/api.py's doors) or the body's size were checked, so that a client without the key, a
web page that rebound a name to loopback and a body over the limit (curl sent 1 MiB of a 2 MiB one before its 413)
were all told to send theirs; and it refused an expectation it does not know with a plain-text 417, outside the
middlewares that give every answer its X-Request-ID and the API's JSON error. So each route the engine serves leaves
the expectation to it (`met_later`), as does a request no route takes (`unrouted_met_later`): one it cannot meet is
refused once the doors have let the request in, and the body is asked for by the handler that reads it, as it begins
to (`read_body`), after all the request could be refused for without it. A handler that reads no body asks for none:
its answer is final (RFC 9110, 10.1.1 lets it). A request answered with the body it waited to be asked for unread, or
before its body came whole, closes its connection (`body_left_unread`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.web_urldispatcher import MatchInfoError

from engine.http.body_budget import BodyBudget
from protocols.shortened import cut_middle

_CONTINUE = "100-continue"
# the expectation quoted back: a header line may be 8 KiB long
_QUOTED_CHARS = 120


async def met_later(request: web.Request) -> None:
    """A route's expect_handler: nothing yet, the request is checked first."""


class _Unrouted(MatchInfoError):
    """What a request no route takes resolves to (a 404, a 405), its expectation left to the engine too."""

    __slots__ = ()

    @property
    def expect_handler(self) -> Callable[[web.Request], Awaitable[None]]:
        return met_later


def unrouted_met_later(router: web.UrlDispatcher) -> None:
    """Has the router leave the expectation of a request no route takes to the engine, as its routes do. aiohttp meets
    it with its own handler, before the middlewares: a POST to a wrong path or with a wrong method was asked for its
    body before the API key or the Host was checked, and an Expect not understood was a plain-text 417 without an
    X-Request-ID."""
    resolve = router.resolve

    async def resolved(request: web.Request) -> web.UrlMappingMatchInfo:
        found = await resolve(request)
        return _Unrouted(found.http_exception) if type(found) is MatchInfoError else found

    router.resolve = resolved  # type: ignore[method-assign]


def body_left_unread(request: web.Request) -> bool:
    """Whether a request's connection closes with its answer (Connection: close) for a body unread and not all come:
    refused before it is read (a 401, 403, 413, 415), or waiting to be asked for. aiohttp reads and drops the rest of a
    body for up to 10 s after the answer (its lingering close) and then closes the connection, which the answer said
    would be kept: a refused client that stopped sending held it that long, told nothing. Told to close, it closes at
    once, and the engine with it; the lingering read stays, so that what a client still sending wrote is not answered
    with a reset that could overtake the refusal. One with an expectation is closed even with its body come whole: its
    client, not asked for the body, may send it all the same or its next request, and the engine cannot tell which
    (RFC 9110, 10.1.1 has a server that answers before the body say whether it reads on or closes): aiohttp reads an
    unread body to its end before the next request, and took the next request's bytes for it."""
    return request.can_read_body and (bool(_expectation(request)) or not request.content.is_eof())


def _expectation(request: web.Request) -> str:
    """The request's Expect, in lower case; "" if none. HTTP/1.0 has no expectations: an Expect in it is ignored
    (RFC 9110, 10.1.1), as aiohttp ignores it."""
    return request.headers.get(hdrs.EXPECT, "").lower() if request.version >= HttpVersion11 else ""


def unmet_expectation(request: web.Request) -> str | None:
    """Why the request's Expect cannot be met, or None."""
    if _expectation(request) in ("", _CONTINUE):
        return None
    quoted = cut_middle(request.headers[hdrs.EXPECT], _QUOTED_CHARS, _QUOTED_CHARS // 2)
    return f"Expect {quoted!r} is not understood: the engine meets {_CONTINUE} alone"


async def read_body(request: web.Request, budget: BodyBudget) -> bytes:
    """The request's body, read within `budget`; refused (HTTPRequestEntityTooLarge, as aiohttp refuses one that grows
    past the limit as it is read) before any of it is read if its Content-Length is over the limit, else asked for if
    the client waits to be."""
    limit = request.client_max_size
    if limit and (request.content_length or 0) > limit:
        raise web.HTTPRequestEntityTooLarge(limit, request.content_length)
    if _expectation(request) == _CONTINUE:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer's size, as the access log counts it, starts after it (as aiohttp's)
    return await budget.read(request)
