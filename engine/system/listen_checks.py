"""Checks on the addresses the engine listens on, made as it starts: one it cannot listen on is the user's to change,
refused in one line naming its flag; one that admits more peers than the user may mean is warned of."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence

import zmq

from engine.commands.arg_types import UsageError
from protocols.curve import KeyPair
from protocols.endpoints import parse_endpoint

log = logging.getLogger("argus.engine")


@contextlib.contextmanager
def bind_errors_named(flag: str) -> Iterator[None]:
    """An address this host cannot listen on (in use, not its own, a privileged port, or no address at all: "foo",
    a host name, a port that is not a number, a transport such as udp:// that a ROUTER cannot use) is the user's to
    change: one line naming the flag and ZeroMQ's reason, not a traceback."""
    try:
        yield
    except zmq.ZMQError as error:
        raise UsageError(f"{flag}: {error}") from None


def refuse_long_ipc_path(endpoint: str, folder: str) -> None:
    """The local workers' IPC `endpoint`, in the engine's temporary `folder`, must fit ZeroMQ's bound: its own error
    named --worker-listen, which may not be an IPC address at all."""
    if len(parse_endpoint(endpoint, listening=True).path.encode()) > zmq.IPC_PATH_MAX_LEN:
        raise UsageError(
            f"the temporary directory {os.path.dirname(folder)} is too long a path for the local workers'"
            f" IPC socket ({zmq.IPC_PATH_MAX_LEN} bytes at most, {endpoint} is longer): set TMPDIR to a shorter one"
        )


def http_address(host: str, port: int) -> str:
    """HOST:PORT as a URL writes it, an IPv6 address in brackets: `--host ::` was logged as http://:::8000, which no
    browser or client takes."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def warn_if_http_open(host: str, port: int, api_key: bool, loopback: bool) -> None:
    """HTTP beyond loopback without an API key serves anyone who reaches it. `loopback`: whether the addresses bound
    are all loopback ones (engine/http/listener.on_loopback), `host` as given."""
    if not api_key and not loopback:
        log.warning(
            "HTTP on %s listens without an API key: any client that reaches it can generate images (set"
            " ARGUS_API_KEY, docs/http-api.md)",
            http_address(host, port),
        )


def warn_if_open(
    endpoints: Sequence[str], keys: KeyPair | None, what_a_peer_can_do: str, api_key: bool, curve_flags: str
) -> None:
    """A TCP address without CURVE admits anyone who reaches it: say so at start, beyond loopback; and on loopback
    too when HTTP asks for an API key, which says that not everyone on this host is trusted (every user of the
    host reaches its loopback, and the key guards HTTP alone), as about an ipc://@NAME of Linux's abstract namespace,
    which every user of the host reaches too (it was taken for a socket file, this user's alone). `endpoints` as bound,
    named as peers reach them: a --client-listen tcp://0.0.0.0:0 was warned of as port 0. `curve_flags`: what turns
    CURVE on for this socket (with --curve-secret given, the client socket lacks only --curve-allow)."""
    if keys is not None:
        return
    for endpoint in endpoints:
        place = parse_endpoint(endpoint, listening=True)
        # a socket file only this user may open (protocols/sockets.py); a name in Linux's abstract namespace (@NAME)
        # has no file, and every user of the host opens it, whatever its permissions (unix(7))
        if place.scheme == "ipc" and not place.path.startswith("@"):
            continue
        if place.scheme == "tcp" and not place.loopback:
            log.warning(
                "%s listens without CURVE: any peer that reaches it can %s (turn CURVE on with %s, docs/scaling.md)",
                endpoint,
                what_a_peer_can_do,
                curve_flags,
            )
        elif api_key:
            log.warning(
                "%s listens without CURVE: any user of this host can %s without the API key, which guards HTTP"
                " alone (turn CURVE on with %s, or listen on an ipc:// file path, which only this user may open;"
                " docs/scaling.md)",
                endpoint,
                what_a_peer_can_do,
                curve_flags,
            )
