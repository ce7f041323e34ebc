"""Whether a ZeroMQ peer answers at an address (protocols/zmq_greeting.py): its greeting's signature, in time."""

import socket
import threading
import time
import uuid

import zmq

from protocols.zmq_greeting import greets_as_zeromq

SIGNATURE = b"\xff" + bytes(8) + b"\x7f"


def _serving(send) -> tuple[str, socket.socket]:
    """A listener on loopback that runs `send` on the one connection it takes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        peer, _ = listener.accept()
        with peer:
            send(peer)

    threading.Thread(target=serve, daemon=True).start()
    return f"tcp://127.0.0.1:{listener.getsockname()[1]}", listener


def test_a_zeromq_socket_greets():
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    try:
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        assert greets_as_zeromq(f"tcp://127.0.0.1:{port}")
    finally:
        sock.close(linger=0)
        context.term()


def test_a_connection_closed_without_a_byte_does_not_greet():
    address, listener = _serving(lambda peer: None)
    with listener:
        assert not greets_as_zeromq(address)


def test_a_signature_trickled_past_the_timeout_does_not_greet():
    """Each read had the whole timeout: a peer sending a byte a little sooner than that held a fleet's loop for ten
    timeouts, every worker's heartbeat with it."""
    done = threading.Event()

    def trickle(peer):
        for byte in SIGNATURE:
            if done.wait(0.1):
                return
            peer.sendall(bytes([byte]))

    address, listener = _serving(trickle)
    with listener:
        try:
            assert not greets_as_zeromq(address, timeout_s=0.35)
        finally:
            done.set()


def test_a_signature_sent_at_once_within_the_timeout_greets():
    address, listener = _serving(lambda peer: (peer.sendall(SIGNATURE), time.sleep(0.2)))
    with listener:
        assert greets_as_zeromq(address)


def test_a_zeromq_socket_in_linuxs_abstract_namespace_greets():
    """ZeroMQ takes ipc://@NAME for NAME in Linux's abstract namespace: probed as a file named @NAME, it never greeted,
    and a worker given another engine's key there waited for ever."""
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    address = f"ipc://@argus-greeting-{uuid.uuid4().hex}"
    try:
        sock.bind(address)
        assert greets_as_zeromq(address)
    finally:
        sock.close(linger=0)
        context.term()


def test_a_source_address_dialled_from_is_the_one_probed_from():
    """tcp://SOURCE;HOST:PORT dials from SOURCE: probed from elsewhere, where the peer (or a firewall) answers
    otherwise, the probe did not see the peer the worker meets."""

    def greet_from_source_alone(peer):
        if peer.getpeername()[0] == "127.0.0.2":
            peer.sendall(SIGNATURE)
            time.sleep(0.2)

    address, listener = _serving(greet_from_source_alone)
    with listener:
        assert greets_as_zeromq(address.replace("tcp://", "tcp://127.0.0.2:0;"))
