"""The HTTP door's listening socket: on the IPv6 wildcard, one that takes IPv4's clients too."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable

from protocols.endpoints import is_loopback

# connections the kernel completes before the engine accepts them: more than the kernel allows gets its most,
# net.core.somaxconn (4,096 since Linux 5.4; sysctl raises it). At aiohttp's 128, clients connecting at once past it had
# their SYN, or their handshake's last ACK, dropped: they waited out SYN retries (1 s, 3 s, 7 s), or sent a request on a
# connection the engine did not have yet (`argus bench engine --http-concurrency 3000`: 19,129 listen overflows, and a
# request unanswered for 30 s)
LISTEN_BACKLOG = 65535


async def listen(factory: Callable[[], asyncio.Protocol], host: str, port: int) -> asyncio.Server:
    """Binds HOST:PORT, not yet listening (the server's start_serving() listens): what the door answers is decided
    from the addresses bound (on_loopback), before any client connects. `--host ::` is every interface, IPv4's too,
    as the engine's checks and its refusal of an empty --host take it: asyncio opens the IPv6 wildcard IPv6-only
    (IPV6_V6ONLY), and every IPv4 client was refused its connection. Any other host is asyncio's to open."""
    loop = asyncio.get_running_loop()
    if not _is_ipv6_wildcard(host):
        return await loop.create_server(factory, host, port, backlog=LISTEN_BACKLOG, start_serving=False)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio sets it: a restart binds at once
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.setblocking(False)
        return await loop.create_server(factory, sock=sock, backlog=LISTEN_BACKLOG, start_serving=False)
    except BaseException:
        sock.close()
        raise


def on_loopback(server: asyncio.Server) -> bool:
    """Whether every address `server` is bound to is a loopback one. Judged from the sockets, not the --host given: a
    name is resolved by asyncio, and one taken for loopback by its name (localhost.localdomain) may resolve elsewhere
    (a wildcard DNS entry, a search domain), where the engine was not warned of and relaxed its Host check."""
    return all(is_loopback(sock.getsockname()[0]) for sock in server.sockets)


def _is_ipv6_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) == ipaddress.IPv6Address("::")
    except ValueError:  # a name, or an address with a zone (fe80::1%eth0), never the wildcard
        return False
