"""The connections open on the client door's socket, counted from its monitor: libzmq bounds none, and tells of each
only there.

Each connection holds a descriptor and about 24 KB of libzmq's buffers (its pipes, its read and write batches) from
its accept to its end, whether or not it ever sends: 5,000 idle clients took an engine from 137 to 257 MB. So the
door admits at most --max-client-connections at once (engine/zmq/zap_handler.py refuses the next ones at their
handshake), counted here.

The bound is on the connections admitted: those whose handshake the ZAP handler let through, until they end. Counting
every connection open, as this did, counted those still in their handshake, the one asked about among them, and those
refused until they ended: a burst of 600 clients at a bound of 512 had 154 refused and 446 admitted, 66 turned away
with room for them.

libzmq tells of a connection's accept, of its handshake's end (succeeded, or failed: refused, cut short, garbled; or
nothing, for a peer that greets as no ZeroMQ 3 does, an HTTP client say) and of its end, in that order, but names
the connection (its descriptor) only in the first and the last. So a connection that ends is taken for one that
failed while any such is open (those refused end within a round trip, the client hanging up), else for one in its
handshake, else for one admitted: the count of those admitted can only be too high (an admitted one ending while
others are in their handshake: its slot is free once their handshakes end, in milliseconds for a client, at most
libzmq's 30 s for a peer that stalls in it), never too low. Taken for an admitted one before one in its handshake, an
HTTP client's connection had a client let past the bound for good. The connections open, the one asked
about among them, are an upper bound too: at a quiet moment, the count.

Read on the event loop as the monitor signals, and by the ZAP handler's thread before it decides (under a lock: a
ZeroMQ socket is one thread's at a time). libzmq tells of a connection's accept before its handshake asks the ZAP
handler, so the connections in their handshake that the handler reads include the one asked about: read only by the
loop, the count lagged as the loop was busy, and a burst of connections at once went past the bound.
"""

from __future__ import annotations

import asyncio
import struct
import threading

import zmq

_ACCEPTED = int(zmq.EVENT_ACCEPTED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_HANDSHAKE_SUCCEEDED = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
# a handshake's end other than success: refused by the ZAP handler (AUTH), the peer gone or timed out, a protocol error
_HANDSHAKE_FAILED = int(
    zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)
_EVENT_ID = struct.Struct("=H")  # a monitor message's first frame: the event (16 bits), then its value (32)


class ClientConnections:
    def __init__(self, sock: zmq.Socket, bound: int):
        """`bound`: the connections admitted at once; `sock` not yet bound (an accept before the monitor is unseen)."""
        self.bound = bound
        # handshakes that succeeded: a client the door found gone can be back only after one (engine/zmq/door.py)
        self.handshakes = 0
        # the open connections as told: in their handshake, whose handshake failed, admitted
        self._handshaking = 0
        self._failed = 0
        self._admitted = 0  # never fewer than are: see above
        # handshakes the ZAP handler let through: those beyond `handshakes` are admitted and not yet told of, or a
        # client gone in the last round trip of its handshake (then too many, until a moment with no other open)
        self._let_through = 0
        self._lock = threading.Lock()
        self._monitor = sock.get_monitor_socket(_ACCEPTED | _DISCONNECTED | _HANDSHAKE_SUCCEEDED | _HANDSHAKE_FAILED)
        self._sock = sock
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._monitor.FD, self.read)
        self.read()  # events may have come before the reader was added

    @property
    def open(self) -> int:
        """Accepted and not yet ended: those refused at their handshake too, until they end."""
        return self._handshaking + self._failed + self._admitted

    def has_room(self) -> bool:
        """Whether the connection in its handshake that the ZAP handler asks about may be admitted. From its thread,
        which calls `let_through` once it is."""
        with self._lock:
            self._read()
            others = self.open - 1  # the one asked about is open, and not admitted
            if others <= 0:
                self._let_through = self.handshakes  # none in flight: those counted were clients gone
            admitted = self._admitted + max(self._let_through - self.handshakes, 0)
            return min(admitted, others) < self.bound

    def let_through(self) -> None:
        """The connection has_room was asked about was admitted (its key too, with CURVE). From the ZAP thread."""
        with self._lock:
            self._let_through += 1

    def read(self) -> None:
        with self._lock:
            self._read()

    def _read(self) -> None:
        """Counts the events waiting: all of them, as a monitor's descriptor signals only a change (as LoopSocket's).
        A monitor left unread stalls libzmq's I/O thread once a thousand or so wait."""
        monitor = self._monitor
        while not monitor.closed:
            try:
                frames = monitor.recv_multipart(zmq.DONTWAIT)
            except zmq.Again:
                return
            event = _EVENT_ID.unpack_from(frames[0])[0]
            if event == _ACCEPTED:
                self._handshaking += 1
            elif event == _HANDSHAKE_SUCCEEDED:
                self.handshakes += 1
                # from those in their handshake; none told so, one that ended was taken from them in its place
                if self._handshaking:
                    self._handshaking -= 1
                    self._admitted += 1
                elif self._failed:
                    self._failed -= 1
                    self._admitted += 1
            elif event == _DISCONNECTED:
                if self._failed:
                    self._failed -= 1
                elif self._handshaking:
                    self._handshaking -= 1
                else:
                    self._admitted -= 1
            elif self._handshaking:  # a handshake failed
                self._handshaking -= 1
                self._failed += 1

    def close(self) -> None:
        """Before the socket closes."""
        with self._lock:
            if self._monitor.closed:
                return
            if self._loop is not None:
                self._loop.remove_reader(self._monitor.FD)
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
