"""Who sent an HTTP request that came through a reverse proxy: the address X-Forwarded-For gives, read only as far
as the proxies the operator names (--forwarded-allow-ips) vouch for it.

Behind a proxy every request comes from the proxy's address, and the queue's shares (engine/dispatch/client_shares.py)
saw one client. Any client can send X-Forwarded-For, so the header is read from its right end, where the proxy next
to the engine appends the address it saw, and only while the hop that wrote each entry is trusted: the first
address not trusted is the client. A client's own X-Forwarded-For lies to the left of what the proxy appended and
is never reached. An entry that is not an address ends the walk at the trusted hop that passed it on; one written
with its port (`203.0.113.7:49152`, `[2001:db8::7]:49152`: Azure's Application Gateway writes every entry so) is its
address, the port being the connection's, not the client's.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# an entry written as a URL writes its host: an IPv6 address in brackets (with a port or not), or an IPv4 one and its
# port; a bare IPv6 address, colons and all, is no match
_WITH_PORT = re.compile(r"\[(?P<bracketed>[^\]]+)\](?::[0-9]{1,5})?|(?P<ipv4>[^:]+):[0-9]{1,5}")


class TrustedProxies:
    def __init__(self, networks: Iterable[IPNetwork]):
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def client_address(self, peer: str, forwarded_for: Iterable[str]) -> str:
        """The address the request came from: `peer` (the socket's), or the entry of the X-Forwarded-For headers
        (in the order they came) that the trusted proxies before it name."""
        address = peer
        entries = [entry.strip() for header in forwarded_for for entry in header.split(",")]
        while entries and self._trusts(address):
            forwarded = _without_port(entries.pop())
            if parsed_address(forwarded) is None:
                break
            address = forwarded
        return address

    def _trusts(self, address: str) -> bool:
        parsed = parsed_address(address)
        return parsed is not None and any(parsed in network for network in self._networks)


def _without_port(entry: str) -> str:
    written = _WITH_PORT.fullmatch(entry)
    return entry if written is None else written["bracketed"] or written["ipv4"]


def parsed_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address `address` writes, an IPv4-mapped one as the IPv4 address it maps; None if it writes none."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    # a dual-stack socket names an IPv4 peer as ::ffff:a.b.c.d; the operator names it a.b.c.d
    mapped = getattr(parsed, "ipv4_mapped", None)
    return mapped or parsed
