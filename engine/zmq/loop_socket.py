"""A ZeroMQ ROUTER driven by the event loop's reader callback: no Future per message.

The socket's FD only signals that its events *may* have changed, so every
wake-up (and the loop turn after a send, which can swallow that signal)
receives until nothing is left (EAGAIN). A burst is handled in slices so one busy peer
cannot starve the rest of the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import zmq

log = logging.getLogger("argus.zmq")

# messages handled per wake-up before yielding to other callbacks
_SLICE = 256
# and the time they may take: a message usually takes tens of microseconds, but some cost milliseconds (a request
# refused is worded from what it sent), and a client's burst of those held the loop for seconds at a time, away from
# every other client and from the workers' heartbeats
_SLICE_S = 0.005
# plain ints: pyzmq's enum flags cost an enum operation at every use on the hot path
_DONTWAIT = int(zmq.DONTWAIT)
_MORE = int(zmq.SNDMORE | zmq.DONTWAIT)

OnMessage = Callable[[bytes, list[zmq.Frame]], None]


class LoopSocket:
    def __init__(self, sock: zmq.Socket, on_message: OnMessage, named: Callable[[bytes], str] = repr):
        """`named`: how a peer's identity is written in a log (a client's is a secret: whoever has it takes its
        replies over)."""
        self._sock = sock
        self._on_message = on_message
        self._named = named
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_scheduled = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.FD, self._drain)
        self._schedule_drain()  # messages may have arrived before the reader was added

    def send(self, identity: bytes, frames: list) -> int:
        """Sends at once: 0, or why it could not (EHOSTUNREACH: the peer is gone; EAGAIN: its queue is full)."""
        send = self._sock.send
        try:
            # frame by frame with plain-int flags: send_multipart's enum arithmetic costs more than the sends
            send(identity, _MORE)
            for frame in frames[:-1]:
                send(frame, _MORE)
            send(frames[-1], _DONTWAIT)
        except zmq.ZMQError as error:  # EHOSTUNREACH (ROUTER_MANDATORY) or EAGAIN (peer's queue full)
            log.debug("send to %s failed: %s", self._named(identity), error)
            return error.errno
        finally:
            # a send can swallow the FD's wake-up for waiting input: look once this loop turn is over
            self._schedule_drain()
        return 0

    def close(self, linger_ms: int = 0) -> None:
        """`linger_ms`: how long what is still queued to send may keep the context's termination waiting."""
        if self._loop is not None and not self._sock.closed:
            self._loop.remove_reader(self._sock.FD)
        self._sock.close(linger=linger_ms)

    def _schedule_drain(self) -> None:
        if self._loop is not None and not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        sock = self._sock
        recv = sock.recv
        ends = time.monotonic() + _SLICE_S
        for _ in range(_SLICE):
            if sock.closed:
                return
            # receiving until EAGAIN re-reads the socket's events as ZMQ_EVENTS would, and spares a getsockopt
            # per message and per frame: pyzmq looks each option up in an enum (9.9 against 2.8 us a 3-frame message)
            try:
                identity = recv(_DONTWAIT)
            except zmq.Again:
                return
            frame = recv(_DONTWAIT, copy=False)  # a ROUTER's identity always has a frame after it
            frames = [frame]
            while frame.more:
                frame = recv(_DONTWAIT, copy=False)
                frames.append(frame)
            try:
                self._on_message(identity, frames)
            except Exception:  # a bug in one handler must not stall the socket for everyone
                log.exception("handling a message from %s failed", self._named(identity))
            if time.monotonic() >= ends:
                break
        self._schedule_drain()  # more may be waiting: come back after others had a turn
