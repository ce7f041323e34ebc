"""The CURVE handshakes the engine's worker socket fails, said in its log. A worker given another public key for the
engine (one of another engine, or this one's before it was given a new key pair) or none at all is never heard: libzmq
fails its handshake and it dials again every 100 ms, and the engine said nothing, leaving the operator no way to tell
why it did not join. A key the ZAP handler refuses is said there (engine/zmq/curve_gate.py), naming the peer's address.

ZeroMQ's monitor names the socket's own address, never the peer's (libzmq 4.3 names it only in its draft monitor),
so each line names what failed and counts the handshakes that failed so since the last: once a minute per socket
address and reason, where a worker dialling again made ten lines a second."""

from __future__ import annotations

import asyncio
import logging

import zmq
from zmq.utils.monitor import recv_monitor_message

from engine.logs.quiet_lines import QuietLines
from protocols.curve import stop_monitoring

log = logging.getLogger("argus.curve")

HANDSHAKE_LOG_INTERVAL_S = 60.0
# events read per wake-up before the loop's other callbacks have a turn: a fleet of a thousand workers with the wrong
# key fails ten thousand handshakes a second
_SLICE = 256
# the events the monitor holds unread: libzmq's I/O thread, finding it full, waits for room, and every connection of
# the engine's waits with it. A thousand workers with the wrong key fill 100,000 in ten seconds of a loop held
_EVENTS_HELD = 100_000
_WHY = {
    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: (
        "its hello cannot be opened with this engine's key: it was likely given another public key for this engine"
        " (another engine's, or this one's before a new key pair; give it this engine's .key)"
    ),
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: (
        "it uses no CURVE (give it a key pair of its own and this engine's public key: --curve-key, --curve-server-key)"
    ),
}


class HandshakeLines:
    def __init__(self, sock: zmq.Socket, socket_name: str):
        """`socket_name`: which of the engine's sockets, in its lines ("workers"). Only failed handshakes that name
        what failed are heard: one that ends without a word is a peer that hung up before its hello, as a TCP health
        check does every few seconds, and a refused key is said by the ZAP handler."""
        self._socket = sock
        self._socket_name = socket_name
        # made as pyzmq's get_monitor_socket makes one, its bound set before it connects: an inproc pipe's is fixed then
        address = f"inproc://argus-handshakes-{id(self)}"
        sock.monitor(address, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        self._monitor = sock.context.socket(zmq.PAIR)
        self._monitor.setsockopt(zmq.RCVHWM, _EVENTS_HELD)
        self._monitor.connect(address)
        self._lines = QuietLines(HANDSHAKE_LOG_INTERVAL_S)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._monitor.FD, self._drain)
        self._loop.call_soon(self._drain)  # events may have come before the reader was added

    def _drain(self) -> None:
        # read until none is left (EAGAIN): the FD signals only that the events may have changed
        for _ in range(_SLICE):
            if self._monitor.closed:
                return
            try:
                event = recv_monitor_message(self._monitor, zmq.DONTWAIT)
            except zmq.Again:
                return
            self._heard(event["value"], event["endpoint"].decode(errors="replace"))
        self._loop.call_soon(self._drain)

    def _heard(self, error: int, endpoint: str) -> None:
        left_out = self._lines.due(f"{endpoint} {error}")
        if left_out is None:
            return
        why = _WHY.get(error, f"ZeroMQ protocol error {error:#x}")
        more = f"; {left_out} more failed so since the last such line" if left_out else ""
        log.warning(
            "CURVE: a handshake on the %s socket (%s) failed: %s. ZeroMQ does not name the peer%s",
            self._socket_name,
            endpoint,
            why,
            more,
        )

    def close(self) -> None:
        """Before the socket closes: disabling the monitor of a closed socket raises."""
        if self._monitor.closed:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._monitor.FD)
        stop_monitoring(self._socket, self._monitor)
        self._monitor.close(linger=0)
