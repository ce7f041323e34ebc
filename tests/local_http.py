"""An aiohttp app served on loopback for as long as a test needs it: a stand-in for an engine's HTTP door, a proxy,
a server that is not an engine."""

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from engine_process import free_port


@contextlib.asynccontextmanager
async def served(app: web.Application, port: int | None = None) -> AsyncIterator[str]:
    """Serves `app` on 127.0.0.1 (on `port`, else a free one) until the block ends; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
