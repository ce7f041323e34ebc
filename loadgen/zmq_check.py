"""The --zmq door asked, before the run, whether it would ever take this client: with a CURVE key the engine does not
admit (or none where it requires one), every request of the run was refused, for as long as the run lasted, and it
ended 0, where an API key refused over HTTP ends it at once (engine_status.check_reachable)."""

from __future__ import annotations

import zmq

from protocols.curve import ClientKeys, RefusedHandshakes
from protocols.sockets import dial, make_socket

# how long to wait for the handshake: an engine that is up answers in milliseconds (a key it cannot read, after ten
# silent tries, in about a second and a half); one whose --max-client-connections are taken says nothing by then, and
# the run goes on as before, its client dialling again (one not up yet is heard at once: no one listening)
CHECK_S = 3.0


def zmq_refusal(address: str, curve: ClientKeys | None, timeout_s: float = CHECK_S) -> str | None:
    """Why the engine at `address` will never take a client with `curve`, as engine.client raises it at each request
    (ConnectionRefusedError); None if it took the handshake, or may yet. `address` is one engine.client took. The
    engine sees a client come and go."""
    context = zmq.Context()
    sock = make_socket(context, zmq.DEALER, curve_client=curve)
    # as engine.client's (link.connect), hearing too a dial that found no one listening
    handshakes = RefusedHandshakes(sock, address, curve is not None, dials=True, rides_out_full=True)
    try:
        dial(sock, address)
        return handshakes.verdict(timeout_s)
    finally:
        handshakes.close()
        sock.close(linger=0)
        context.term()
