"""CURVE on the engine's ZeroMQ sockets: its key pair, the public keys it admits, the ZAP handler.

Local workers get an ephemeral key pair made at start, admitted beside the keys
in the allowed directory, so turning CURVE on never locks out our own workers.

Each socket admits keys of its own (its ZAP domain): a key trusted to send
requests need not be trusted to join as a worker, which is sent users' prompts.
Without a directory for workers, the one directory admits both.
"""

from __future__ import annotations

import logging

import zmq
from zmq.auth.thread import ThreadAuthenticator

from engine.arg_types import read_user_file
from protocols.curve import ClientKeys, KeyPair, load_public_keys

log = logging.getLogger("argus.curve")

# the ZAP domains of the two sockets
WORKERS = "workers"
CLIENTS = "clients"


class _AllowedKeys:
    """The credentials provider zmq.auth asks about each connecting peer: the keys admitted per domain."""

    def __init__(self, keys_by_domain: dict[str, set[bytes]]):
        self._keys = keys_by_domain

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self._keys.get(domain, ()):
            return True
        # asked once per connection handshake (libzmq does not retry a refused peer), so no flood
        log.warning("CURVE: refused a peer whose public key %s is not admitted (%s socket)", key.decode(), domain)
        return False


class CurveGate:
    def __init__(self, context: zmq.Context, secret_file: str, allowed_dir: str, workers_dir: str | None = None):
        """`workers_dir`: the keys admitted on the worker socket, where `allowed_dir` then admits clients only."""
        self.server_keys = read_user_file(KeyPair.load, secret_file)
        self.local_worker_keys = ClientKeys(KeyPair.generate(), self.server_keys.public)
        clients = _load(allowed_dir, "client" if workers_dir else "remote worker or client")
        workers = _load(workers_dir, "remote worker") if workers_dir else clients
        self._authenticator = ThreadAuthenticator(context)
        allowed = _AllowedKeys({CLIENTS: clients, WORKERS: workers | {self.local_worker_keys.own.public}})
        for domain in (CLIENTS, WORKERS):  # zmq.auth asks a domain's own provider: "*" is only for no domain
            self._authenticator.configure_curve_callback(domain, allowed)

    def start(self) -> None:
        """Must run before the secured sockets bind (it answers their ZAP requests)."""
        self._authenticator.start()

    def stop(self) -> None:
        self._authenticator.stop()


def _load(directory: str, who: str) -> set[bytes]:
    keys = read_user_file(load_public_keys, directory)
    log.info("CURVE on: %d public keys admitted from %s", len(keys), directory)
    if not keys:
        log.warning("CURVE: %s holds no public key (*.key): no %s can connect", directory, who)
    return keys
