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


class ZapHandler(ThreadAuthenticator):
    """zmq.auth's handler (which admits a NULL handshake, and a CURVE one by the keys it is configured with), asked
    first whether the client door is full."""

    def __init__(self, context: zmq.Context, keys: _Keys | None = None):
        super().__init__(context)
        self._keys = keys  # not _allowed: zmq.auth's own, the addresses it admits
        self.clients_full: Callable[[], bool] = _never  # the client door's (ClientDoor.full), once it is made
        self.count_client_refused: Callable[[], None] = _nothing
        self._lines = QuietLines(_LOG_EVERY_S)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # a ZAP request's frames: version, request id, domain, address (the peer's IP), identity, mechanism, ...
        if len(msg) >= 6 and msg[2] == CLIENTS.encode() and self.clients_full():
            self.count_client_refused()
            held = self._lines.due("full")
            if held is not None:
                log.warning(
                    "refused a ZeroMQ client connection from %s: --max-client-connections are open%s",
                    msg[3].decode(errors="replace") or "a local socket",
                    f"; {held} more refused since the last such line" if held else "",
                )
            self._send_zap_reply(msg[1], _FULL, b"too many client connections")
            return
        if self._keys is not None:
            # zmq.auth hands the keys provider the domain and the key alone, and its line named no host to look for.
            # Its thread asks the provider within this call, one request at a time
            self._keys.peer_address = msg[3].decode(errors="replace") if len(msg) > 3 else ""
        await super().handle_zap_message(msg)


def _never() -> bool:
    return False


def _nothing() -> None:
    pass
