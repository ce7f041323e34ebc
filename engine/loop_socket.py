"""A ZeroMQ ROUTER driven by the event loop's reader callback: no Future per message.

The socket's FD only signals that its events *may* have changed, so every
wake-up (and every send, which can swallow that signal) re-reads ZMQ_EVENTS and
receives until nothing is left. A burst is handled in slices so one busy peer
cannot starve the rest of the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import zmq

log = logging.getLogger("argus.zmq")

# messages handled per wake-up before yielding to other callbacks
_SLICE = 256

OnMessage = Callable[[bytes, list[zmq.Frame]], None]


class LoopSocket:
    def __init__(self, sock: zmq.Socket, on_message: OnMessage):
        self._sock = sock
        self._on_message = on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_scheduled = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.FD, self._drain)
        self._schedule_drain()  # messages may have arrived before the reader was added

    def send(self, identity: bytes, frames: list) -> bool:
        """Sends at once; False when the peer is gone or its queue is full."""
        try:
            self._sock.send_multipart([identity, *frames], zmq.DONTWAIT)
        except zmq.ZMQError as error:  # EHOSTUNREACH (ROUTER_MANDATORY) or EAGAIN (peer's queue full)
            log.debug("send to %r failed: %s", identity, error)
            return False
        finally:
            if self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self._schedule_drain()
        return True

    def close(self) -> None:
        if self._loop is not None and not self._sock.closed:
            self._loop.remove_reader(self._sock.FD)
        self._sock.close(linger=0)

    def _schedule_drain(self) -> None:
        if self._loop is not None and not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        for _ in range(_SLICE):
            if self._sock.closed or not self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            frames = self._sock.recv_multipart(zmq.DONTWAIT, copy=False)
            try:
                self._on_message(frames[0].bytes, frames[1:])
            except Exception:  # a bug in one handler must not stall the socket for everyone
                log.exception("handling a message from %r failed", frames[0].bytes)
        self._schedule_drain()  # more may be waiting: come back after others had a turn
