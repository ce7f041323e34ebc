"""The engine's ZAP handler: libzmq asks it about each handshake on a socket that names a ZAP domain (RFC 27), the
engine's two doors, and drops the connection it refuses before anything of it is read.

It refuses a client past the client door's bound (--max-client-connections) and, with CURVE (engine/zmq/curve_gate.py),
a key not admitted. One per context: libzmq asks the one bound at inproc://zeromq.zap.01.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import zmq
from zmq.auth.thread import ThreadAuthenticator

from engine.logs.quiet_lines import QuietLines
from protocols.curve import FULL_STATUS

log = logging.getLogger("argus.clients")

CLIENTS = "clients"  # the client socket's ZAP domain
WORKERS = "workers"  # the worker socket's
# a refused client is said in a line at most this often: what a line held back is counted in the next
_LOG_EVERY_S = 60.0
# a client past the bound is refused FULL_STATUS: libzmq sends it in an ERROR, closes the connection at once, and the
# client's socket dials no more; engine.client names it. A 300 ("temporary") sends nothing, and leaves the connection
# open until the handshake times out (30 s) when the client's READY came first, as it does on a busy engine: 500
# clients connecting at once to a bound of 100 held 500 connections, refused and dialling again, none served for minutes
_FULL = str(FULL_STATUS).encode()


class _Keys(Protocol):
    """What the keys provider (curve_gate._AllowedKeys) is told of the peer asked about."""

    peer_address: str


class _ClientSlots(Protocol):
    """The client door's count of the connections it admitted (engine/zmq/client_connections.py)."""

    def has_room(self) -> bool: ...

    def let_through(self) -> None: ...


class _NoBound:
    """Before the client door is made."""

    def has_room(self) -> bool:
        return True

    def let_through(self) -> None:
        pass


class ZapHandler(ThreadAuthenticator):
    """zmq.auth's handler (which admits a NULL handshake, and a CURVE one by the keys it is configured with), asked
    first whether the client door has room."""

    def __init__(self, context: zmq.Context, keys: _Keys | None = None):
        super().__init__(context)
        self._keys = keys  # not _allowed: zmq.auth's own, the addresses it admits
        self.client_slots: _ClientSlots = _NoBound()  # the client door's (ClientDoor.slots), once it is made
        self.count_client_refused: Callable[[], None] = _nothing
        self._lines = QuietLines(_LOG_EVERY_S)
        self._asked_for_a_client = False  # while a client's handshake is decided: its 200 takes a slot

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # a ZAP request's frames: version, request id, domain, address (the peer's IP), identity, mechanism, ...
        for_a_client = len(msg) >= 6 and msg[2] == CLIENTS.encode()
        if for_a_client and not self.client_slots.has_room():
            self.count_client_refused()
            held = self._lines.due("full")
            if held is not None:
                log.warning(
                    "refused a ZeroMQ client connection from %s: --max-client-connections are admitted%s",
                    msg[3].decode(errors="replace") or "a local socket",
                    f"; {held} more refused since the last such line" if held else "",
                )
            self._send_zap_reply(msg[1], _FULL, b"too many client connections")
            return
        if self._keys is not None:
            # zmq.auth hands the keys provider the domain and the key alone, and its line named no host to look for.
            # Its thread asks the provider within this call, one request at a time
            self._keys.peer_address = msg[3].decode(errors="replace") if len(msg) > 3 else ""
        self._asked_for_a_client = for_a_client
        try:
            await super().handle_zap_message(msg)  # its thread's one request at a time: no other asks meanwhile
        finally:
            self._asked_for_a_client = False

    def _send_zap_reply(self, request_id: bytes, status_code: bytes, status_text: bytes, user_id: str = "anonymous"):
        # a client admitted takes a slot as it is answered, before libzmq tells the door of its handshake's end
        if self._asked_for_a_client and status_code == b"200":
            self.client_slots.let_through()
        super()._send_zap_reply(request_id, status_code, status_text, user_id)


def _nothing() -> None:
    pass
