"""Whether the engine would ever take this worker, asked before the worker spends minutes loading its model: a
worker started by hand with a key the engine does not admit (or none, or the wrong engine's) learned it only once
its model had loaded, and was then refused at its first hello."""

from __future__ import annotations

import zmq

from protocols.curve import ClientKeys, RefusedHandshakes
from protocols.sockets import make_socket

# how long to wait for the engine's handshake: an engine that is up answers in milliseconds (a key it cannot read,
# after ten silent tries, in about a second); one not up yet says nothing, and the model loads meanwhile anyway
PROBE_S = 3.0


def refusal_before_loading(connect: str, curve: ClientKeys | None, timeout_s: float = PROBE_S) -> str | None:
    """Why the engine at `connect` will never take a worker with these keys, or None if it took the handshake or
    did not answer in time. The probe sends no message: the engine sees a peer come and go, nothing more."""
    context = zmq.Context()
    sock = make_socket(context, zmq.DEALER, curve_client=curve)
    handshakes = RefusedHandshakes(sock, connect, curve is not None, dials=True)
    try:
        sock.connect(connect)
        return handshakes.verdict(timeout_s)
    finally:
        handshakes.close()
        sock.close()
        context.term()
