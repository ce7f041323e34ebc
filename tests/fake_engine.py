"""An engine's worker socket and nothing else: a test drives a real worker process message by message."""

from __future__ import annotations

import time

import zmq

from engine_process import free_port
from protocols.worker_messages import Cleared, Heartbeat, Probe, engine_side_codec


class FakeEngine:
    def __init__(self):
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.socket.bind(self.address)
        self.codec = engine_side_codec()
        self.identity = b""

    def receive(self, kind: type, timeout_s: float = 120.0, skipping: tuple[type, ...] = ()):
        """The next message of `kind` (heartbeats and `skipping` in between are skipped, probes cleared), within
        `timeout_s` in all."""
        deadline = time.monotonic() + timeout_s
        while self.socket.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            identity, *frames = self.socket.recv_multipart()
            message = self.codec.decode(frames)
            if isinstance(message, Probe) and kind is not Probe:
                # asked before the worker loads its model, on a connection of its own: cleared, as an engine would
                self.socket.send_multipart([identity, *self.codec.encode(Cleared())])
                continue
            self.identity = identity
            if isinstance(message, kind):
                return message
            assert isinstance(message, (Heartbeat, *skipping)), message
        raise TimeoutError(f"no {kind.__name__} from the worker")

    def send(self, message) -> None:
        self.socket.send_multipart([self.identity, *self.codec.encode(message)])

    def close(self):
        self.socket.close()
        self.context.term()

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
