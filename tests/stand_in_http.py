"""Stand-in HTTP servers on loopback for tests: what an engine's status routes or its door answer, a proxy, a server
that is not an engine; served from a thread (for code that blocks) or on the test's own event loop."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import AsyncIterator, Iterator

from aiohttp import web

from engine_process import free_port


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serves `handler` on a free loopback port, in a thread, and yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.asynccontextmanager
async def served(app: web.Application, port: int | None = None) -> AsyncIterator[str]:
    """Serves `app` on 127.0.0.1 (on `port`, else a free one) on the running loop until the block ends; yields its
    base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
