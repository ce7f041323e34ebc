"""Whether the engine would ever take this worker, asked before the worker spends minutes loading its model: a
worker started by hand with a key the engine does not admit (or none, or the wrong engine's), under a live worker's
id, or of another backend or model, learned it only once its model had loaded, and was then refused at its first
hello."""

from __future__ import annotations

import time

import zmq

from protocols.codec import DecodeError
from protocols.curve import ClientKeys, RefusedHandshakes
from protocols.sockets import dial, make_socket
from protocols.worker_messages import Probe, Refused, engine_side_codec, worker_side_codec
from workers.runtime import unreadable_answer

# how long to wait for the engine's handshake and its answer: an engine that is up answers in milliseconds (a key it
# cannot read, after ten silent tries, in about a second); one not up yet says nothing, and the model loads meanwhile
# anyway, as it does when an engine of another version does not read the probe
PROBE_S = 3.0


def refusal_before_loading(
    connect: str, curve: ClientKeys | None, probe: Probe, timeout_s: float = PROBE_S
) -> str | None:
    """Why the engine at `connect` will not take this worker, or None if it cleared `probe` or did not answer in
    time. The engine registers nothing: it sees a peer come, ask and go."""
    deadline = time.monotonic() + timeout_s
    context = zmq.Context()
    sock = make_socket(context, zmq.DEALER, curve_client=curve)
    handshakes = RefusedHandshakes(sock, connect, curve is not None, dials=True, asks_greeting=True)
    try:
        dial(sock, connect)
        if refused := handshakes.verdict(timeout_s):
            return refused
        if not handshakes.handshook:
            # no engine up there yet, or a peer that speaks no ZeroMQ 3: libzmq takes an HTTP server (the engine's
            # --port given for its --worker-listen) for one of ZeroMQ's first version, with no handshake, and hands on
            # its 400 as a message. Let through, the model loaded (minutes, for SD-XL) before the hello learned it
            if not sock.poll(0):
                return None
            answer = worker_side_codec().decode(sock.recv_multipart(copy=False))
            return unreadable_answer(connect, "a probe", answer) if isinstance(answer, DecodeError) else None
        sock.send_multipart(engine_side_codec().encode(probe))
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0 or not sock.poll(left_ms):
            return None
        answer = worker_side_codec().decode(sock.recv_multipart(copy=False))
        if isinstance(answer, DecodeError):
            return unreadable_answer(connect, "a probe", answer)
        return answer.reason if isinstance(answer, Refused) else None
    finally:
        handshakes.close()
        sock.close()
        context.term()
