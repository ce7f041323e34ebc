"""Whether the Ray cluster's GCS still answers, for the log (engine/fleet/ray/launcher.py).

When the GCS goes (`ray stop`; a closed terminal's SIGHUP, which ends the processes of the engine's own Ray instance
while the engine takes it for a key reload), no actor can be started, and Ray ends the engine, exit 1, 60 s on
(RAY_gcs_rpc_server_reconnect_timeout_s): the engine said nothing of it, Ray's own line at the exit alone told why. A
TCP connection to the GCS's port is tried every few seconds, on the event loop: one it refuses, or that is not made
within a few seconds, is the GCS gone, said at once in one ERROR line, and its return in an INFO one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger("argus.launcher")

PROBE_EVERY_S = 2.0
PROBE_TIMEOUT_S = 5.0
# how long Ray's driver goes without the GCS before it ends the process, in seconds (Ray's default: 60)
_RAY_GCS_RECONNECT_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"


async def gcs_unreachable(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the GCS at HOST:PORT takes no connection, or None when it takes one."""
    host, _, port = address.rpartition(":")  # Ray's own HOST:PORT, an IPv6 host in brackets or not
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout_s)
    except TimeoutError:
        return f"no connection within {timeout_s:g} s"
    except socket.gaierror as error:  # a name (a Kubernetes service's) that does not resolve, now or any more
        # its own words: os.strerror of getaddrinfo's code, negative, said `Unknown error -2`
        return error.strerror or str(error)
    except OSError as error:
        # the reason alone: asyncio's message for a refusal is `Connect call failed ('127.0.0.1', 6379)`
        return os.strerror(error.errno) if error.errno else str(error) or type(error).__name__
    writer.close()
    return None


async def watch_gcs(address: str, cluster: str, every_s: float = PROBE_EVERY_S) -> None:
    """Says when `cluster`'s GCS at `address` goes, and when it answers again; runs until cancelled."""
    gone = False
    while True:
        reason = await gcs_unreachable(address)
        if reason is not None and not gone:
            log.error(
                "lost %s: its GCS at %s takes no connection (%s). No worker that ends can be replaced while it is"
                " gone; those still connected serve on. Ray ends the engine (exit 1) unless the GCS answers again"
                " within %s s of going",
                cluster,
                address,
                reason,
                os.environ.get(_RAY_GCS_RECONNECT_ENV, "60"),
            )
        elif reason is None and gone:
            log.info("the GCS of %s at %s answers again", cluster, address)
        gone = reason is not None
        await asyncio.sleep(every_s)
