"""Where a client reached the engine, for the image URLs of `response_format=url` (without --public-url): the Host
header it sent, else the address it came to; and which Host names an engine on loopback answers (api.py's door)."""

from __future__ import annotations

import re

from aiohttp import hdrs, web
from yarl import URL

from engine.commands.arg_types import URL_HOST
from engine.http.forwarded_for import parsed_address
from protocols.endpoints import is_loopback

# a Host header's form, host[:port] (RFC 9110, 7.2): a name (international ones too), or an IP literal in brackets
HOST_HEADER = re.compile(r"(\[[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?\]|[^\s\[\]@:/?#]+)(:[0-9]{1,5})?")


def request_origin(request: web.Request) -> str:
    """`scheme://host[:port]`, or ValueError when the Host header makes no URL."""
    # X-Forwarded-Proto and -Host are not read: any client may send them, and only a proxy the engine is told to
    # trust could be believed (--public-url says where clients reach it instead; proxy_hints.py logs their word against
    # the URLs made)
    host = request.headers.get(hdrs.HOST)
    origin = request.url.origin() if host is not None else _socket_origin(request)
    # yarl keeps "a/b", "a b" or "a?b" as a host, reads "evil.com@localhost" as localhost, closes "[::1" and reads
    # a port of full-width digits: the image URL would then point at another path or site, or at none (port 0)
    well_formed = host is None or HOST_HEADER.fullmatch(host)
    if not (well_formed and URL_HOST.fullmatch(origin.raw_host or "") and origin.port != 0):
        raise ValueError(f"{request.host!r} is not a host name or address")
    return str(origin)


def named_hosts(request: web.Request) -> list[tuple[str, str]]:
    """Each host[:port] the request names the host it is for in, and where: its Host header ("" when it sent none),
    and the authority of an absolute-form target (`POST http://HOST:PORT/path`, as sent to a forward proxy), from
    which aiohttp makes the request's URL, and so request_origin the image URLs (RFC 9112, 3.2.2 has a server ignore
    the Host header then). Not CONNECT's target, the host it asks a tunnel to."""
    named = [("Host", request.headers.get(hdrs.HOST, ""))]
    if request.method != hdrs.METH_CONNECT and not request.raw_path.startswith("/"):
        named.append(("the request target's host", request.url.raw_authority or ""))
    return named


def _socket_origin(request: web.Request) -> URL:
    """The origin of a request without a Host header (HTTP/1.0 allows it): aiohttp makes its URL from the address
    it came on, without the port, and the image URLs named port 80 whatever --port was."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not isinstance(sockname, tuple):
        raise ValueError("the request names no host and came on no address")
    origin = request.url.origin().with_port(sockname[1])
    # on the dual-stack socket of --host ::, an IPv4 client came to an IPv4-mapped address: its URLs named
    # http://[::ffff:7f00:1]:PORT, which a client without IPv6 cannot reach, for 127.0.0.1
    address = parsed_address(sockname[0])
    return origin.with_host(str(address)) if address is not None and address.version == 4 else origin


def host_name(host: str) -> str:
    """The name in a Host header, without its port or an IPv6 address's brackets; "" if it is not one."""
    try:
        return URL.build(scheme="http", authority=host).host or ""
    except ValueError:
        return ""


def names_this_engine(name: str, public_host: str | None) -> bool:
    """Whether a host name (host_name's) names an engine on loopback, and no name a web page's DNS could rebind to
    it: a loopback name or address, a name of one label (a proxy's upstream, a hosts-file name), or --public-url's
    host."""
    if name == public_host or is_loopback(name):  # localhost.localdomain too (protocols/endpoints.py)
        return True
    return "." not in name and ":" not in name
