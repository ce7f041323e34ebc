"""Whether a ZeroMQ peer answers at an address: it greets a new connection at once with ZMTP's signature.

libzmq sends the first ten bytes of its greeting (0xFF, eight bytes of padding, 0x7F) as soon as a connection is
made, before it reads anything, whatever its security mechanism. An engine that fails every CURVE handshake (another
key pair) greets so first; the way to an engine that is down (an ssh -L tunnel, docker's published port, a proxy)
takes the connection and closes it without a byte: the two fail a ZeroMQ handshake alike, without a word.
"""

from __future__ import annotations

import ipaddress
import socket
import time

from protocols.endpoints import Endpoint, NotAnEndpoint, parse_endpoint, parse_host_port

_SIGNATURE_BYTES = 10
_SIGNATURE_FIRST = 0xFF
_SIGNATURE_LAST = 0x7F


def greets_as_zeromq(address: str, timeout_s: float = 0.5) -> bool:
    """Whether a peer at `address` (tcp://HOST:PORT or ipc://PATH) sends ZMTP's signature within `timeout_s` of a
    connection; False for anything else (no one listening, a close, silence, another protocol). The connection is
    given `timeout_s` too: the loop that asks waits at most twice that, and a host name's look-up."""
    try:
        endpoint = parse_endpoint(address)
    except NotAnEndpoint:
        return False
    try:
        peer = _connected(endpoint, timeout_s)
    except OSError:
        return False
    with peer:
        # the signature's bytes may come apart: the reads share the timeout. Each with the whole of it, a peer that
        # sent a byte a little sooner than that held the loop that asked for ten timeouts
        deadline = time.monotonic() + timeout_s
        received = b""
        try:
            while len(received) < _SIGNATURE_BYTES and (left := deadline - time.monotonic()) > 0:
                peer.settimeout(left)
                if not (more := peer.recv(_SIGNATURE_BYTES - len(received))):
                    break
                received += more
        except OSError:  # a timeout, a reset
            return False
    return len(received) == _SIGNATURE_BYTES and received[0] == _SIGNATURE_FIRST and received[-1] == _SIGNATURE_LAST


def _connected(endpoint: Endpoint, timeout_s: float) -> socket.socket:
    """A connection made as ZeroMQ would make it: from tcp://SOURCE;'s address, to ipc://@NAME in Linux's abstract
    namespace. Probed from elsewhere (a file named @NAME, the default route's address), the peer the worker meets was
    not the one asked, and a worker given another engine's key there waited for ever."""
    if endpoint.scheme != "ipc":
        return socket.create_connection(
            (endpoint.host, endpoint.port), timeout=timeout_s, source_address=_source_address(endpoint.source)
        )
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        peer.settimeout(timeout_s)
        peer.connect("\0" + endpoint.path[1:] if endpoint.path.startswith("@") else endpoint.path)
    except OSError:
        peer.close()  # not left to the garbage collector: asked once a second while the engine is away
        raise
    return peer


def _source_address(source: str) -> tuple[str, int] | None:
    """tcp://SOURCE;'s HOST:PORT to bind to, for an address or * (any); None for none, or an interface's name, which
    ZeroMQ reads and Python does not (probed from the default route, as before)."""
    if not source:
        return None
    endpoint = parse_host_port(source, listening=True)
    if endpoint.host == "*":
        return "", endpoint.port
    try:
        ipaddress.ip_address(endpoint.host)
    except ValueError:
        return None
    return endpoint.host, endpoint.port
