"""Whether a ZeroMQ peer answers at an address: it greets a new connection at once with ZMTP's signature.

libzmq sends the first ten bytes of its greeting (0xFF, eight bytes of padding, 0x7F) as soon as a connection is
made, before it reads anything, whatever its security mechanism. An engine that fails every CURVE handshake (another
key pair) greets so first; the way to an engine that is down (an ssh -L tunnel, docker's published port, a proxy)
takes the connection and closes it without a byte: the two fail a ZeroMQ handshake alike, without a word.
"""

from __future__ import annotations

import socket

from protocols.endpoints import NotAnEndpoint, parse_endpoint

_SIGNATURE_BYTES = 10
_SIGNATURE_FIRST = 0xFF
_SIGNATURE_LAST = 0x7F


def greets_as_zeromq(address: str, timeout_s: float = 0.5) -> bool:
    """Whether a peer at `address` (tcp://HOST:PORT or ipc://PATH) sends ZMTP's signature within `timeout_s` of a
    connection; False for anything else (no one listening, a close, silence, another protocol)."""
    try:
        endpoint = parse_endpoint(address)
    except NotAnEndpoint:
        return False
    try:
        if endpoint.scheme == "ipc":
            peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            peer.settimeout(timeout_s)
            peer.connect(endpoint.path)
        else:
            peer = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s)
    except OSError:
        return False
    with peer:
        received = b""
        try:
            while len(received) < _SIGNATURE_BYTES and (more := peer.recv(_SIGNATURE_BYTES - len(received))):
                received += more
        except OSError:  # a timeout, a reset
            return False
    return len(received) == _SIGNATURE_BYTES and received[0] == _SIGNATURE_FIRST and received[-1] == _SIGNATURE_LAST
