"""Requests still in flight when a run ends early (Ctrl-C, a request that failed, an engine that died): cancelled and
waited for before their client or session closes. Left running, each then failed on the closed client, and asyncio
printed its "Task exception was never retrieved" traceback after the run's own one-line error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task]) -> None:
    """Cancels every task and waits until each has ended, whatever it ended with."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
