"""The HTTP door's listening socket takes many clients connecting at once: its accept queue holds their connections
until the engine accepts them, not aiohttp's 128, past which their SYNs were dropped and their clients waited out
retries, or a read timeout on a connection the engine never had."""

import asyncio
import selectors
import socket
from pathlib import Path

import pytest

from engine.http.listener import listen

# more clients connecting at once than aiohttp's backlog of 128, fewer than the kernel's 4,096 most (net.core.somaxconn)
AT_ONCE = 300
# the handshakes of a loopback take microseconds; a connection left out of a full accept queue is waiting for a SYN
# retry (after 1 s), which a queue still full drops again
HANDSHAKES_S = 3.0


def handshakes_done(port: int) -> int:
    """Connects AT_ONCE clients without letting the loop accept any (this blocks it): how many the kernel completed,
    each held in the listening socket's accept queue."""
    clients = []
    try:
        with selectors.DefaultSelector() as selector:
            for _ in range(AT_ONCE):
                client = socket.socket()
                clients.append(client)
                client.setblocking(False)
                client.connect_ex(("127.0.0.1", port))
                selector.register(client, selectors.EVENT_WRITE)
            done = 0
            while done < AT_ONCE:
                ready = selector.select(HANDSHAKES_S)
                if not ready:
                    break
                for key, _ in ready:
                    selector.unregister(key.fileobj)
                    done += key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        return done
    finally:
        for client in clients:
            client.close()


def kernel_most() -> int | None:
    """net.core.somaxconn, the accept queue the kernel allows at most (None where there is no /proc to tell)."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.skipif((kernel_most() or AT_ONCE) < AT_ONCE, reason="the kernel caps an accept queue below AT_ONCE")
async def test_the_accept_queue_holds_hundreds_of_clients_connecting_at_once():
    server = await listen(asyncio.Protocol, "127.0.0.1", 0)
    try:
        await server.start_serving()  # listen() binds alone: the engine listens once it judged the addresses bound
        port = server.sockets[0].getsockname()[1]
        assert handshakes_done(port) == AT_ONCE
    finally:
        server.close()
        await server.wait_closed()
