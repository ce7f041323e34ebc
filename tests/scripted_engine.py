"""A scripted ZeroMQ ROUTER standing in for an engine's client door, for the tests of engine.client: it records what
clients send and answers only as the test says (the fixture `scripted_engine`, tests/conftest.py)."""

import pytest
import zmq
from waiting import wait_for

from engine_process import free_port
from protocols.client_messages import Cancel, engine_side_codec


class ScriptedEngine:
    """A ROUTER that records what clients send and answers only as the test says."""

    def __init__(self):
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.context = zmq.Context()
        self.socket = self._bound()
        self.codec = engine_side_codec()

    def _bound(self) -> zmq.Socket:
        sock = self.context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.address)
        return sock

    def restart(self) -> None:
        """Another engine on the address: the clients connect again, and what they had sent is lost."""
        self.down()
        self.up()

    def down(self) -> None:
        """No engine on the address (until up())."""
        self.socket.close()

    def up(self) -> None:
        # libzmq lets the port go in its own thread, after close() returns
        assert wait_for(self._rebound), f"{self.address} was not let go"

    def _rebound(self) -> bool:
        try:
            self.socket = self._bound()
        except zmq.ZMQError:
            return False
        return True

    def receive(self, timeout_s: float = 10.0):
        assert self.socket.poll(int(timeout_s * 1000)), "the client sent nothing"
        identity, *frames = self.socket.recv_multipart()
        return identity, self.codec.decode(frames)

    def timed_out(self, client, request_id: str) -> bytes:
        """A call of ArgusClient `client` (a short timeout_s) under `request_id`, left unanswered until it timed out:
        its request and its Cancel read here. The client's identity, to answer it by."""
        with pytest.raises(TimeoutError):
            client.generate("a fox", request_id=request_id)
        identity, _ = self.receive()
        assert self.receive()[1] == Cancel(request_id)
        return identity

    def answer(self, identity: bytes, message) -> None:
        self.socket.send_multipart([identity, *self.codec.encode(message)])

    def close(self) -> None:
        self.socket.close()
        self.context.term()
