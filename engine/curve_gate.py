"""CURVE on the engine's ZeroMQ sockets: its key pair, the public keys it admits, the ZAP handler.

Local workers get an ephemeral key pair made at start, admitted beside the keys
in the allowed directory, so turning CURVE on never locks out our own workers.
"""

from __future__ import annotations

import logging

import zmq
from zmq.auth.thread import ThreadAuthenticator

from protocols.curve import ClientKeys, KeyPair, load_public_keys

log = logging.getLogger("argus.curve")


class _AllowedKeys:
    """The credentials provider zmq.auth asks about each connecting peer."""

    def __init__(self, keys: set[bytes]):
        self._keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self._keys:
            return True
        # asked once per connection handshake (libzmq does not retry a refused peer), so no flood
        log.warning("CURVE: refused a peer whose public key %s is not admitted", key.decode())
        return False


class CurveGate:
    def __init__(self, context: zmq.Context, secret_file: str, allowed_dir: str):
        self.server_keys = KeyPair.load(secret_file)
        self.local_worker_keys = ClientKeys(KeyPair.generate(), self.server_keys.public)
        allowed = load_public_keys(allowed_dir)
        log.info("CURVE on: %d public keys admitted from %s", len(allowed), allowed_dir)
        if not allowed:
            log.warning("CURVE: %s holds no public key (*.key): no remote worker or client can connect", allowed_dir)
        self._authenticator = ThreadAuthenticator(context)
        self._authenticator.configure_curve_callback("*", _AllowedKeys(allowed | {self.local_worker_keys.own.public}))

    def start(self) -> None:
        """Must run before the secured sockets bind (it answers their ZAP requests)."""
        self._authenticator.start()

    def stop(self) -> None:
        self._authenticator.stop()
