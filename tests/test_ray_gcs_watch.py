"""The probe of a Ray cluster's GCS (engine/fleet/ray/gcs_watch.py) says why it takes no connection, in words."""

import asyncio

from engine.fleet.ray.gcs_watch import gcs_unreachable


async def test_a_gcs_that_takes_the_connection_is_reachable():
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        assert await gcs_unreachable(f"127.0.0.1:{port}") is None


async def test_a_refused_connection_is_said_by_its_reason():
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    assert await gcs_unreachable(f"127.0.0.1:{port}") == "Connection refused"


async def test_a_gcs_host_that_does_not_resolve_is_said_so():
    """A GCS address by name (a Kubernetes service's) that does not resolve was said to take no connection for
    `Unknown error -2`: getaddrinfo's code, which os.strerror does not know."""
    reason = await gcs_unreachable("no-such-host.invalid:6379")
    assert reason and "Unknown error" not in reason, reason
