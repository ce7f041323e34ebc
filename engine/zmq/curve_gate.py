"""CURVE on the engine's ZeroMQ sockets: its key pair, the public keys it admits, the ZAP handler.

Local workers get an ephemeral key pair made at start, admitted beside the keys
in the allowed directory, so turning CURVE on never locks out our own workers.

Each socket admits keys of its own (its ZAP domain): a key trusted to send
requests need not be trusted to join as a worker, which is sent users' prompts.
Without a directory for workers, the one directory admits both; without one for
clients, the client socket has no CURVE (workers elsewhere, clients on this host).

The directories are read at start and again on `reload` (SIGHUP): a key added
is admitted, a key removed refused, at the peer's next handshake. ZeroMQ checks
a key only then, and keeps a peer already connected: so the doors ask `admits`
too, of the key each message came with (`peer_key`), and the engine drops the
workers whose key was removed (WorkerLink.drop_revoked).
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable

import zmq

from engine.commands.arg_types import read_user_file
from engine.logs.plurals import counted
from engine.logs.quiet_lines import QuietLines
from engine.zmq.zap_handler import CLIENTS, WORKERS, ZapHandler
from protocols.curve import ClientKeys, KeyPair, load_public_keys

log = logging.getLogger("argus.curve")

# a key refused on one socket and admitted on the other: whose it is, and the flag that admits it there
_KEY_OF = {WORKERS: "a worker key (--curve-allow-workers)", CLIENTS: "a client key (--curve-allow)"}
# refused peers are logged at most once per socket this often: anyone who holds the engine's public key (every
# worker and client host) can make a handshake with a fresh key each, thousands a second, a log line each
REFUSED_LOG_INTERVAL_S = 10.0


class _AllowedKeys:
    """The credentials provider zmq.auth asks about each connecting peer: the keys admitted per domain."""

    def __init__(self, keys_by_domain: dict[str, set[bytes]], clock: Callable[[], float] = time.monotonic):
        self.keys = keys_by_domain  # replaced whole, never changed in place: the authenticator's thread reads it
        self._lines = QuietLines(REFUSED_LOG_INTERVAL_S, clock)  # one a domain
        # the address of the peer asked about, set by the ZAP handler before it asks: zmq.auth hands the callback the
        # domain and the key alone, and the line named no host to look for
        self.peer_address = ""

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys.get(domain, ()):
            return True
        unlogged = self._lines.due(domain)
        if unlogged is None:
            return False
        # a key given to the wrong end (a client's to a worker): its peer hears only that the handshake was refused
        other = CLIENTS if domain == WORKERS else WORKERS
        if key in self.keys.get(other, ()):
            why = f"on the {domain} socket: it is {_KEY_OF[other]}, admitted on the {other} socket"
        else:
            why = f"({domain} socket)"
        log.warning(
            "CURVE: refused a peer%s whose public key %s is not admitted %s%s",
            f" at {self.peer_address}" if self.peer_address else "",
            key.decode(),
            why,
            f"; {unlogged} more refused since the last such line" if unlogged else "",
        )
        return False


class CurveGate:
    def __init__(self, context: zmq.Context, secret_file: str, allowed_dir: str | None, workers_dir: str | None = None):
        """`workers_dir`: the keys admitted on the worker socket, where `allowed_dir` then admits clients only;
        `allowed_dir` None (then `workers_dir` is given): the client socket goes without CURVE (`guards_clients`)."""
        self.server_keys = read_user_file(KeyPair.load, secret_file)
        self.local_worker_keys = ClientKeys(KeyPair.generate(), self.server_keys.public)
        self._allowed_dir, self._workers_dir = allowed_dir, workers_dir
        self.guards_clients = allowed_dir is not None
        self._allowed = _AllowedKeys(self._read_keys())
        self.zap = ZapHandler(context, self._allowed)  # the context's: the client door's bound is asked there too
        for domain in (CLIENTS, WORKERS):  # zmq.auth asks a domain's own provider: "*" is only for no domain
            self.zap.configure_curve_callback(domain, self._allowed)

    def admits(self, domain: str, key: bytes) -> bool:
        """Whether the public key (z85) is admitted on the socket of `domain` now (the loop may ask: the keys are
        replaced whole by a reload)."""
        return key in self._allowed.keys.get(domain, ())

    def reload(self) -> None:
        """Reads the directories again. One that cannot be read (a key file spoiled, say) raises UsageError naming
        it, and the keys admitted until now stay in force: a half-read directory could lock everyone out."""
        before = self._allowed.keys
        after = self._read_keys()
        self._allowed.keys = after
        own = {self.local_worker_keys.own.public}  # not a key of the directories, which are what a user changes
        for domain in (CLIENTS, WORKERS) if self.guards_clients else (WORKERS,):
            added, removed = len(after[domain] - before[domain]), len(before[domain] - after[domain])
            log.info(
                "CURVE keys reloaded: %d admitted on the %s socket (%d added, %d removed)",
                len(after[domain] - own),
                domain,
                added,
                removed,
            )

    def _read_keys(self) -> dict[str, set[bytes]]:
        clients: set[bytes] = set()  # the client socket without CURVE: it asks for no key
        if self._allowed_dir is not None:
            clients = _load(self._allowed_dir, "client" if self._workers_dir else "remote worker or client")
        workers = _load(self._workers_dir, "remote worker") if self._workers_dir else clients
        return {CLIENTS: clients, WORKERS: workers | {self.local_worker_keys.own.public}}


def _load(directory: str, who: str) -> set[bytes]:
    keys = read_user_file(load_public_keys, directory)
    log.info("CURVE on: %s admitted from %s", counted(len(keys), "public key"), directory)
    if not keys:
        # secret keys alone: the peers' secrets copied where their public keys go, which they should keep to themselves
        secrets = (
            " (only secret keys, *.key_secret: put the peers' public NAME.key there)"
            if glob.glob(os.path.join(glob.escape(directory), "*.key_secret"))
            else ""
        )
        log.warning("CURVE: %s holds no public key (*.key)%s: no %s can connect", directory, secrets, who)
    return keys
