"""The client door's --max-client-connections bounds the connections it admitted, not those still in their handshake:
it counted every connection open, so clients that would fit were refused while others' handshakes were in flight (a
burst of 600 clients at a bound of 512 had 446 admitted, 154 refused), and a client slow with its greeting held a slot
it was never given."""

import socket

import pytest
import zmq
from waiting import wait_for

from engine_process import start_engine
from protocols.client_messages import Generate, Images, client_side_codec
from protocols.curve import FULL_STATUS

_BOUND = 4
_STALLED = 6  # TCP connections that never send their greeting: in their handshake until libzmq's 30 s run out


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    bound = ("--max-client-connections", str(_BOUND))
    engine = start_engine(tmp_path_factory.mktemp("bound"), "--time-scale", "0.02", *bound, backend="sim", workers=1)
    yield engine
    assert engine.stop() == 0


def _handshake(context: zmq.Context, address: str) -> tuple[zmq.Socket, int | None]:
    """A client connected, and how its handshake ended: None admitted, else the ZAP status it was refused with."""
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    # watched before it connects: over loopback the handshake may end before a monitor added after the connect
    monitor = client.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    try:
        client.connect(address)
        assert monitor.poll(30_000), "no end to the handshake"
        event = zmq.utils.monitor.recv_monitor_message(monitor)
    finally:
        client.disable_monitor()
        monitor.close()
    return client, None if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED else event["value"]


def test_connections_in_their_handshake_take_no_slot_and_the_bound_admits_exactly_its_number(engine):
    port = int(engine.client_address.rsplit(":", 1)[1])
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(_STALLED)]
    context = zmq.Context()
    clients = []

    def dial() -> int | None:
        client, refused = _handshake(context, engine.client_address)
        clients.append(client)
        return refused

    try:
        assert wait_for(lambda: engine.metric("argus_zmq_client_connections") == _STALLED)
        assert [dial() for _ in range(_BOUND + 1)] == [None] * _BOUND + [FULL_STATUS]
        # still in their handshake as the others were decided: they were there to be miscounted
        assert engine.metric("argus_zmq_client_connections") >= _STALLED + _BOUND
        codec = client_side_codec()
        for i, client in enumerate(clients[:_BOUND]):
            client.send_multipart(codec.encode(Generate(f"r{i}", "a wren", width=64, height=64)))
            assert client.poll(30_000) and isinstance(codec.decode(client.recv_multipart()), Images)
        # room for one again, once those in their handshake ended (until then, the one that ends may be one of them)
        for sock in stalled + [clients[0], clients[-1]]:  # the refused one too
            sock.close()
        assert wait_for(lambda: engine.metric("argus_zmq_client_connections") == _BOUND - 1)
        assert dial() is None
        assert dial() == FULL_STATUS
    finally:
        for sock in stalled:
            sock.close()
        for client in clients:
            client.close()
        context.term()
    # the stalled ones and the refused gone: the count is of those admitted, as they end
    assert wait_for(lambda: engine.metric("argus_zmq_client_connections") == 0)


def test_connections_that_end_with_no_handshake_open_no_slot(engine):
    """A peer that greets as no ZeroMQ 3 does (an HTTP client, a port scanner) ends with no word of its handshake:
    taken for an admitted client ending, each let one more client past the bound, for good."""
    port = int(engine.client_address.rsplit(":", 1)[1])
    context = zmq.Context()
    clients = []
    try:
        for _ in range(_BOUND):
            client, refused = _handshake(context, engine.client_address)
            clients.append(client)
            assert refused is None
        for _ in range(3 * _BOUND):
            # hung up on by this end: libzmq may read the request's first bytes as a ZMTP 1.0 greeting and wait out its
            # handshake's 30 s for the rest, so the engine's hanging up is not waited for
            with socket.create_connection(("127.0.0.1", port)) as http:
                http.sendall(b"GET /ready HTTP/1.1\r\nHost: engine\r\n\r\n")
        assert wait_for(lambda: engine.metric("argus_zmq_client_connections") == _BOUND)
        client, refused = _handshake(context, engine.client_address)
        clients.append(client)
        assert refused == FULL_STATUS
    finally:
        for client in clients:
            client.close()
        context.term()
    assert wait_for(lambda: engine.metric("argus_zmq_client_connections") == 0)
