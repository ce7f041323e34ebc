"""Request ids over HTTP: the `X-Request-ID` a client sends, or one the engine makes, on every reply.

The id is the request's `request_id`, the one a ZeroMQ client's Generate carries (protocols/client_messages.py): the
engine's log lines about the request name it (docs/reliability.md), and its reply says it in `X-Request-ID`, which
OpenAI's clients read (`result._request_id`, `APIStatusError.request_id`). A client's own is taken within the bounds
of a ZeroMQ one (1 to MAX_REQUEST_ID_CHARS characters), printable ASCII only: a header carries no other text, and a
newline would forge a log line. One that is not is a 400 saying why, before anything else is read; on a probe's
path (liveness, readiness) it is replaced by one of the engine's instead (a header a proxy adds must not fail it), and
so it is for a request the router refuses (a path not served, a method its path does not take): that 404 or 405 is the
more basic error, and such a request is not served whatever its id.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

from protocols.limits import MAX_REQUEST_ID_CHARS

HEADER = "X-Request-ID"
REQUEST_ID = web.RequestKey("request_id", str)
_RULE = f"it takes 1 to {MAX_REQUEST_ID_CHARS} printable ASCII characters, or none for the engine to make one"


def request_ids() -> Iterator[str]:
    """Ids for HTTP requests, unique within this process: a random prefix drawn once, then a count.
    (uuid4 per request reads the OS's random source: 2 to 4% of the engine's time at the HTTP peak.)"""
    prefix = uuid.uuid4().hex[:16]
    return (f"{prefix}-{n}" for n in itertools.count())


def header_problem(given: list[str]) -> str | None:
    """Why the X-Request-ID headers a request came with are no request id, or None."""
    if len(given) > 1:
        return f"the {HEADER} header is sent {len(given)} times: send it once ({_RULE})"
    (value,) = given
    if not value:
        return f"the {HEADER} header is empty: {_RULE}"
    if len(value) > MAX_REQUEST_ID_CHARS:
        return f"the {HEADER} header is {len(value)} characters long: {_RULE}"
    if not (value.isascii() and value.isprintable()):
        at, char = next((i, c) for i, c in enumerate(value) if not (c.isascii() and c.isprintable()))
        return f"the {HEADER} header holds {char!r} at position {at}, which is not printable ASCII: {_RULE}"
    return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_id_middleware(refuse: Callable[[web.Request, str], web.Response], probes: frozenset[str]):
    """Gives each request its id (request[REQUEST_ID]) and says it on the reply, errors included; a client's id that
    is none is answered refuse(request, why), under an id of the engine's, except on the paths of `probes` and for a
    request the router refuses, which are answered as they would be under one of the engine's."""
    made = request_ids()

    @web.middleware
    async def with_request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.getall(HEADER, None)
        problem = None if given is None else header_problem(given)
        # a request the router refused is answered that (its handler raises the 404 or 405): it was a 400 about the
        # header, which told a client with a wrong method to mend a header it would then send again in vain
        if given is None or problem and (request.path in probes or request.match_info.http_exception is not None):
            request_id = next(made)
        elif problem:
            request[REQUEST_ID] = next(made)  # the refusal is said under it
            response = refuse(request, problem)
            response.headers[HEADER] = request[REQUEST_ID]
            return response
        else:
            request_id = given[0]
        request[REQUEST_ID] = request_id
        response = await handler(request)
        response.headers[HEADER] = request_id
        return response

    return with_request_id
