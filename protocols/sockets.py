"""The one place ZeroMQ sockets are made: linger, high-water marks, identity, bind or connect."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import secrets
import socket
import stat

import zmq

from protocols.curve import ClientKeys, KeyPair, make_client, make_server
from protocols.endpoints import Endpoint, NotAnEndpoint, parse_endpoint

# a message over the high-water mark is dropped by ROUTER sockets (not queued
# without bound); replies that matter are small, and engines re-send nothing
DEFAULT_HWM = 100_000
# the largest frame a socket takes in (libzmq bounds each frame, not a message of many): a whole encoded
# 1536 px image with latents fits with room to spare
MAX_FRAME_BYTES = 64 * 1024 * 1024


def _seed_peer_numbering() -> None:
    """A ROUTER names a peer that gives no identity of its own by a number counted from a start libzmq draws with
    libc's rand() as the socket is made, which nothing seeds: the same at every start of the engine, so any peer
    could connect under the first such client's name and take its replies (ROUTER_HANDOVER). Seeded from the OS,
    the start is a secret."""
    ctypes.CDLL(None).srand(ctypes.c_uint(secrets.randbits(32)))


def make_socket(
    context: zmq.Context,
    kind: int,
    *,
    connect: str | None = None,
    identity: bytes | None = None,
    curve_server: KeyPair | None = None,
    zap_domain: str = "",
    curve_client: ClientKeys | None = None,
    max_frame_bytes: int = MAX_FRAME_BYTES,
    send_hwm: int = DEFAULT_HWM,
    recv_hwm: int = DEFAULT_HWM,
    handover: bool = False,
    heartbeat_ms: tuple[int, int] | None = None,
) -> zmq.Socket:
    """`recv_hwm`: the messages ZeroMQ reads ahead from each peer before it stops reading that peer, which then
    waits to send (nothing is dropped). It counts messages, not bytes.

    `handover` (ROUTER): a peer that connects under an identity already connected takes its traffic over. Only
    for peers whose identity is a secret: on the worker socket, where an identity is a worker's public name, it
    would let anyone who can dial in take a worker's prompts (and get the worker killed as silent).

    `heartbeat_ms` (interval, timeout): a ZMTP ping every interval, and a connection on which no whole frame came
    in for timeout after one is dropped (a connecting socket dials again). libzmq answers pings on any socket.

    `zap_domain`: the context's ZAP handler is asked about each handshake, in this domain (with `curve_server`,
    whether the peer's key is admitted); without, none is asked."""
    if kind == zmq.ROUTER:
        _seed_peer_numbering()
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, send_hwm)
    sock.setsockopt(zmq.RCVHWM, recv_hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
    if kind == zmq.ROUTER:
        # an unroutable reply (peer gone) raises instead of vanishing silently
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, int(handover))
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if heartbeat_ms is not None:
        sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms[0])
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, heartbeat_ms[1])
    # security must be set before bind or connect
    if curve_server is not None:
        make_server(sock, curve_server, zap_domain)
    elif zap_domain:
        sock.zap_domain = zap_domain.encode()
    if curve_client is not None:
        make_client(sock, curve_client)
    if connect is not None:
        dial(sock, connect)
    return sock


def dial(sock: zmq.Socket, address: str) -> None:
    """Connects the socket to `address`: to one with an IPv6 host too (see _set_ipv6_for)."""
    _set_ipv6_for(sock, _endpoint(address, listening=False))
    sock.connect(address)


def _endpoint(address: str, listening: bool) -> Endpoint:
    """The address parsed; one that is none, of no scheme: ZeroMQ refuses it as the socket binds or connects it, in
    its own words (the flags' types refuse it first, in protocols/endpoints.py's)."""
    try:
        return parse_endpoint(address, listening)
    except NotAnEndpoint:
        return Endpoint("")


def _set_ipv6_for(sock: zmq.Socket, endpoint: Endpoint) -> None:
    """libzmq takes an IPv6 host (tcp://[::1]:5555) only on a socket with its IPV6 option on: a bind failed as "No
    such device", and a connect dialled nothing, without a word, for ever. On for such an address alone, as each bind
    or connect takes the option as it is then: with it on, a name (localhost) resolves to its IPv6 address first,
    which an engine listening on 127.0.0.1 never answers, and * listens on IPv6's interfaces too."""
    sock.setsockopt(zmq.IPV6, int(endpoint.ipv6))


def bind_all(sock: zmq.Socket, addresses: list[str] | tuple[str, ...]) -> list[str]:
    """Binds every address; returns the concrete endpoints (tcp port 0 resolved). One that cannot be bound deletes the
    socket files of those bound before it, which the socket still listens on: libzmq leaves them as the socket closes,
    and an engine refused its second address (a port in use) left its first ipc:// path behind."""
    endpoints = []
    bound = []
    try:
        for address in addresses:
            endpoint = _endpoint(address, listening=True)
            _prepare_ipc_dir(endpoint.path, address)
            _refuse_ipc_path_taken(endpoint.path, address)
            _set_ipv6_for(sock, endpoint)
            sock.bind(address)
            bound.append(address)
            _restrict_ipc_file(endpoint.path)
            endpoints.append(sock.getsockopt(zmq.LAST_ENDPOINT).decode())
    except BaseException:
        SocketFiles(bound).remove()
        raise
    return endpoints


class SocketFiles:
    """The ipc:// socket files a socket bound, deleted as it closes: libzmq leaves them (it deletes only those of its
    own wildcard paths), and a stopped engine's --client-listen and --worker-listen paths stayed behind, sockets
    nobody listened on. Made right after the bind, so each file is known by its inode: one deleted under the engine
    and bound anew by another engine is that one's, and left to it."""

    def __init__(self, addresses: list[str] | tuple[str, ...]):
        self._files: list[tuple[str, int, int]] = []
        for address in addresses:
            path = _endpoint(address, listening=True).path
            if not path or path.startswith("@"):  # Linux's abstract namespace has no file
                continue
            with contextlib.suppress(OSError):  # gone already (a tmp cleaner): nothing of this socket's to delete
                found = os.stat(path)
                self._files.append((path, found.st_dev, found.st_ino))

    def remove(self) -> None:
        """Before the socket closes: while it still listens, no other engine can have taken a path it holds."""
        files, self._files = self._files, []
        for path, device, inode in files:
            with contextlib.suppress(OSError):
                found = os.stat(path)
                if (found.st_dev, found.st_ino) == (device, inode):
                    os.unlink(path)


def _prepare_ipc_dir(path: str, address: str) -> None:
    """Makes the folder of an ipc:// path. One it cannot make raises ZMQError, as a bind does, for its flag to name:
    an OSError (ipc:///run/argus/clients started without root, a path under a file) ended `argus serve` in a
    traceback, exit 1. A name in Linux's abstract namespace (@NAME) has no folder: `@argus/clients` made one named
    @argus in the working directory, and an engine whose working directory it could not write in could not start."""
    if not path or path.startswith("@"):
        return
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as error:
        raise zmq.ZMQError(
            error.errno, f"cannot make the folder {folder} of its socket: {error.strerror} (addr={address!r})"
        ) from None


def _refuse_ipc_path_taken(path: str, address: str) -> None:
    """Raises ZMQError (as a bind does) for an ipc:// path a live process listens on, or that is no socket. libzmq
    deletes whatever is at the path before it binds there: a second engine given a first one's address bound it
    without an error, took the new clients (or workers), and deleted the path as it stopped, the first engine
    serving on unreachable; and a regular file there (a mistyped path) was deleted. A socket nothing listens on
    any more (its engine was killed) is taken, as before."""
    if not path or path.startswith("@"):  # Linux's abstract namespace has no file: its bind refuses one in use
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:  # nothing there (or nothing this user may look at: the bind says so)
        return
    if not stat.S_ISSOCK(mode):
        raise zmq.ZMQError(errno.EEXIST, f"{path} is a file, not a socket: binding would delete it (addr={address!r})")
    if _listened_on(path):
        raise zmq.ZMQError(
            errno.EADDRINUSE, f"Address already in use (addr={address!r}): another process listens on that socket"
        )


def _listened_on(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a listener whose backlog is full would hold a blocking connect
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):  # a socket left by a process that died
        return False
    except OSError:  # its backlog full (EAGAIN), or another user's socket: someone's, not this engine's to delete
        return True
    finally:
        probe.close()
    return True


def _restrict_ipc_file(path: str) -> None:
    # only the owner may connect to a local socket
    if path and os.path.exists(path):
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def allow_open_files(needed: int) -> bool:
    """Raises this process's soft limit on open descriptors to `needed`, as far as its hard limit lets it (the soft
    one is often 1,024: an engine or fleet of a thousand TCP peers outgrows it); False if it stays below."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return True
    limit = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    except (ValueError, OSError):  # above what the kernel allows a process (macOS: kern.maxfilesperproc)
        return False
    return limit >= needed
