"""A bound on the request bodies the HTTP door holds as it reads them, all connections together (BODY_BUDGET_BYTES,
protocols/limits.py): past it, a body is refused 503 `too_many_bodies` (Retry-After: 1, the connection closed) rather
than read.

Each body is bounded (1 MiB, EngineConfig.max_body_bytes) and so is the connection count, but not their product: a
client that sent 1 MiB short of its last byte on each of many connections had the engine hold each body for the 30 s
it waits for the rest. 300 such connections took an engine of 2 sim workers (SIMULATED workers, the engine's memory
real) from 250 to 615 MB; at the default --max-connections (18,972 under a limit of 20,000 open files) that is 23 GB,
and any client that can reach an engine without an API key can send them. A request's body is a few KB (a prompt is
at most 4,000 characters): the bound is met only when many clients send bodies near the limit at once, or one client
sends many, and then a body is refused, not the engine's memory taken.
"""

from __future__ import annotations

from aiohttp import web

from engine.logs.plurals import counted
from protocols.limits import BODY_BUDGET_BYTES


class BodiesFull(Exception):
    """The bodies being read hold the budget: this one is refused."""

    def __init__(self, budget: int) -> None:
        super().__init__(
            f"the engine holds as many request bodies being read as it takes ({counted(budget, 'byte')} together):"
            " retry later"
        )


class BodyBudget:
    def __init__(self, budget: int = BODY_BUDGET_BYTES) -> None:
        self.budget = budget
        self.held = 0  # bytes of the bodies being read, all requests together

    async def read(self, request: web.BaseRequest) -> bytes:
        """The request's body, its bytes counted as they come until it is whole. HTTPRequestEntityTooLarge past the
        request's client_max_size, as aiohttp's own read refuses it; BodiesFull when a chunk would take the bodies
        being read past the budget."""
        limit = request.client_max_size
        body = bytearray()
        try:
            async for chunk in request.content.iter_any():
                if limit and len(body) + len(chunk) > limit:
                    raise web.HTTPRequestEntityTooLarge(limit, len(body) + len(chunk))
                if self.held + len(chunk) > self.budget:
                    raise BodiesFull(self.budget)
                self.held += len(chunk)
                body += chunk
        finally:
            self.held -= len(body)
        return bytes(body)
