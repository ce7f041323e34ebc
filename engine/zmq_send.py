"""Sending on a zmq.asyncio ROUTER from synchronous code on the loop."""

from __future__ import annotations

import logging

import zmq
import zmq.asyncio

log = logging.getLogger("argus.zmq")


def send_now(sock: zmq.asyncio.Socket, identity: bytes, frames: list) -> bool:
    """Sends without awaiting; False when the peer is gone.

    A ROUTER never blocks on send (past the high-water mark it drops), so the
    send completes at once; with ROUTER_MANDATORY an unknown peer fails at once.
    """
    future = sock.send_multipart([identity, *frames], copy=False)
    if future.done():
        error = future.exception()
        if error is None:
            return True
        log.debug("send to %r failed: %s", identity, error)
        return False
    # queued by pyzmq (socket momentarily busy): report a later failure, don't lose it silently
    future.add_done_callback(_log_failure)
    return True


def _log_failure(future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("deferred send failed: %s", future.exception())
