"""Stand-ins for the load generator's clients, for tests of its run that need no engine."""

from __future__ import annotations

import asyncio

from loadgen.clients import LoadClient, RequestOptions
from loadgen.records import Answer


class BusyAfter(LoadClient):
    """Answers every request busy, `delay_s` after it was sent."""

    def __init__(self, delay_s: float):
        super().__init__(RequestOptions())
        self._delay_s = delay_s

    async def _exchange(self, prompt, seed, slo_ms) -> Answer:
        await asyncio.sleep(self._delay_s)
        return Answer("busy", code="busy")

    async def close(self) -> None:
        pass
