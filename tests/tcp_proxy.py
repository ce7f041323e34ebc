"""A TCP forwarder on loopback that can cut every connection through it, as a NAT or load balancer reset does."""

import socket
import threading

from engine_process import free_port


class DroppingProxy:
    def __init__(self, target_port: int):
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", free_port()))
        self.address = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        # set, per connection, once it is dead without a word (go_silent): what comes in is swallowed
        self._silent: list[threading.Event] = []
        self.accepted = 0
        # connections closed at once as the target refused them (no engine up): as ssh -L, socat or docker's port do
        self.turned_away = 0
        # cleared: what comes in is held, not passed on (a link that stalls); it is lost if the link is then cut
        self.flowing = threading.Event()
        self.flowing.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_all(self) -> None:
        pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for end in pair:
                _shut(end)

    def go_silent(self) -> None:
        """Every connection through it goes dead with neither end told, as when the far host is gone or a NAT
        forgets the flow: bytes are taken in and never delivered. New connections are served."""
        for silent in self._silent:
            silent.set()

    def close(self) -> None:
        self._listener.close()
        self.drop_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                self.turned_away += 1
                client.close()
                continue
            self._pairs.append((client, upstream))
            silent = threading.Event()
            self._silent.append(silent)
            self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink, self.flowing, silent), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket, flowing: threading.Event, silent: threading.Event) -> None:
    try:
        while data := source.recv(65536):
            flowing.wait()
            if not silent.is_set():
                sink.sendall(data)
    except OSError:
        pass
    if silent.is_set():
        return  # one end's close does not reach the other either: drop_all shuts them
    _shut(source)
    _shut(sink)


def _shut(end: socket.socket) -> None:
    try:
        end.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    end.close()
