"""The connections open on the client door's socket, counted from its monitor: libzmq bounds none, and tells of each
only there.

Each connection holds a descriptor and about 24 KB of libzmq's buffers (its pipes, its read and write batches) from
its accept to its end, whether or not it ever sends: 5,000 idle clients took an engine from 137 to 257 MB. So the
door admits at most --max-client-connections at once (engine/zmq/zap_handler.py refuses the next ones at their
handshake), counted here.

Read on the event loop as the monitor signals, and by the ZAP handler's thread before it decides (under a lock: a
ZeroMQ socket is one thread's at a time). libzmq tells of a connection's accept before its handshake asks the ZAP
handler, so the count it reads includes the connection asked about: read only by the loop, it lagged as the loop was
busy, and a burst of connections at once went past the bound.
"""

from __future__ import annotations

import asyncio
import struct
import threading

import zmq

_ACCEPTED = int(zmq.EVENT_ACCEPTED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_HANDSHAKE_SUCCEEDED = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_EVENT_ID = struct.Struct("=H")  # a monitor message's first frame: the event (16 bits), then its value (32)


class ClientConnections:
    def __init__(self, sock: zmq.Socket, bound: int):
        """`bound`: the connections admitted at once; `sock` not yet bound (an accept before the monitor is unseen)."""
        self.bound = bound
        self.open = 0  # accepted and not yet ended: those refused at their handshake too, until they end
        # handshakes that succeeded: a client the door found gone can be back only after one (engine/zmq/door.py)
        self.handshakes = 0
        self._lock = threading.Lock()
        self._monitor = sock.get_monitor_socket(_ACCEPTED | _DISCONNECTED | _HANDSHAKE_SUCCEEDED)
        self._sock = sock
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._monitor.FD, self.read)
        self.read()  # events may have come before the reader was added

    def full(self) -> bool:
        """Whether a connection now in its handshake finds the door's bound taken (it counts among the open ones).
        From the ZAP handler's thread."""
        self.read()
        return self.open > self.bound

    def read(self) -> None:
        """Counts the events waiting: all of them, as a monitor's descriptor signals only a change (as LoopSocket's).
        A monitor left unread stalls libzmq's I/O thread once a thousand or so wait."""
        with self._lock:
            monitor = self._monitor
            while not monitor.closed:
                try:
                    frames = monitor.recv_multipart(zmq.DONTWAIT)
                except zmq.Again:
                    return
                event = _EVENT_ID.unpack_from(frames[0])[0]
                if event == _ACCEPTED:
                    self.open += 1
                elif event == _DISCONNECTED:
                    self.open -= 1
                else:
                    self.handshakes += 1

    def close(self) -> None:
        """Before the socket closes."""
        with self._lock:
            if self._monitor.closed:
                return
            if self._loop is not None:
                self._loop.remove_reader(self._monitor.FD)
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
