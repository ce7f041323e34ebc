"""The addresses ZeroMQ sockets listen on and dial, as the engine, its workers and its clients take them:
tcp://HOST:PORT and ipc://PATH; to listen on, PORT 0 or * for any free one; to dial, ZeroMQ's tcp://SOURCE;HOST:PORT
too (SOURCE the local HOST:PORT the connection leaves from). One parser for all: each part of argus split them by hand,
and what a flag took was refused by ZeroMQ only as a socket dialled it (a traceback), or dialled for ever."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

FORM = "tcp://HOST:PORT or ipc://PATH"


class NotAnEndpoint(ValueError):
    """`why`: what in particular is wrong, "" for an address not of the form at all."""

    def __init__(self, text: str, why: str = ""):
        super().__init__(f"expected {FORM}, not {text!r}" + (f": {why}" if why else ""))
        self.why = why


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str  # tcp or ipc
    host: str = ""  # tcp: a name, an interface, an address (an IPv6 one without its brackets), or * (listening)
    port: int = 0  # tcp: 0 (written 0 or *) for any free one, listening
    source: str = ""  # tcp, dialling: SOURCE as written, "" for none
    ipv6: bool = False  # the socket needs its IPV6 option on (see protocols/sockets._set_ipv6_for)
    path: str = ""  # ipc

    @property
    def loopback(self) -> bool:
        """Whether it is a TCP address on this host's loopback alone."""
        return self.scheme == "tcp" and is_loopback(self.host)


def parse_endpoint(text: str, listening: bool = False) -> Endpoint:
    """A NotAnEndpoint for what no socket of argus can use, ZeroMQ's judgement of HOST left to it (a name, an
    interface, an address of this host to listen on)."""
    scheme, sep, rest = text.partition("://")
    if sep and scheme == "ipc":
        if not rest:
            raise NotAnEndpoint(text)
        return Endpoint("ipc", path=rest)
    if not sep or scheme != "tcp":
        raise NotAnEndpoint(text)
    source, semicolon, place = rest.rpartition(";")
    if not semicolon:
        return _host_port(text, place, listening)
    if listening:
        raise NotAnEndpoint(text, "a SOURCE; is for dialling, not for listening")
    # ZeroMQ takes a SOURCE of HOST:PORT alone (PORT 0 for any), and dials nothing, without a word, from one without
    source_part = _host_port(text, source, listening=True, why="SOURCE; is a HOST:PORT (PORT 0 for any)")
    endpoint = _host_port(text, place, listening)
    return Endpoint("tcp", endpoint.host, endpoint.port, source, endpoint.ipv6 or source_part.ipv6)


def parse_host_port(text: str, listening: bool = False) -> Endpoint:
    """HOST:PORT without a scheme (a Ray cluster's address): a NotAnEndpoint if it is none."""
    return _host_port(text, text, listening)


def _host_port(text: str, place: str, listening: bool, why: str = "") -> Endpoint:
    written, colon, port_text = place.rpartition(":")
    bracketed = written.startswith("[") and written.endswith("]")
    host = written[1:-1] if bracketed else written
    # ASCII digits alone: Python's int() reads others ('５５５５'), which ZeroMQ refuses
    digits = port_text.isascii() and port_text.isdigit()
    if not (colon and host and (digits or port_text == "*")):
        raise NotAnEndpoint(text, why)
    if ":" in host and not bracketed and not _is_ipv6(host):
        raise NotAnEndpoint(text, why)
    port = 0 if port_text == "*" else int(port_text)
    if port > 65535:
        raise NotAnEndpoint(text, "a PORT is at most 65535")
    if not listening:
        if port == 0:
            why = f"PORT {port_text} (any free port) is for listening: dial the port the engine listens on"
            raise NotAnEndpoint(text, why)
        if host == "*":
            raise NotAnEndpoint(text, "* (every interface) is for listening: dial the engine's host")
    # in brackets: IPv6's form, which an IPv4 address or * in them takes too (as ZeroMQ takes them), so kept so
    return Endpoint("tcp", host, port, ipv6=bracketed or _is_ipv6(host))


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.partition("%")[0]).version == 6
    except ValueError:  # a name, an interface, * or an IPv4 address
        return False


# loopback's names in the hosts file Fedora and RHEL ship (their localhost4 and localhost6 are of one label): no DNS
# outside answers for .localdomain, a top-level domain that does not exist. Judged here for every use: the HTTP door
# answered `Host: localhost.localdomain` as loopback, while `argus serve --host localhost.localdomain` was started as
# open (warned of as listening to anyone, and without the door's guard against DNS rebinding)
_LOOPBACK_NAMES = frozenset({"localhost.localdomain", "localhost4.localdomain4", "localhost6.localdomain6"})


def is_loopback(host: str) -> bool:
    """Whether a host name or address (no port, no brackets) names this machine's loopback only."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: resolved to loopback, never by DNS
        return True
    if name in _LOOPBACK_NAMES:
        return True
    address = _numeric_address(name.partition("%")[0])
    if address is None:  # *, an interface name or another host name
        return False
    # ::ffff:127.0.0.1, IPv4's loopback as an IPv6 socket reaches it, which Python 3.11 calls no loopback
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).is_loopback


def _numeric_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    # IPv4's other forms (inet_aton(3): 127.1, 0x7f.0.0.1, 2130706433), which asyncio and ZeroMQ read as the address
    # they listen on, and curl sends as the Host: `--host 127.1` listened on loopback, was warned of as open, and
    # answered any Host (no DNS-rebinding guard). Read as they read them, with no name looked up (AI_NUMERICHOST)
    try:
        found = socket.getaddrinfo(text, None, socket.AF_INET, socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (OSError, ValueError):  # a name, an interface, *; one IDNA cannot encode, or with a NUL in it
        return None
    return ipaddress.IPv4Address(found[0][4][0])
