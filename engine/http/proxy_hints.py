"""A warning for an operator whose engine hands out image URLs its clients cannot reach: behind a reverse proxy without
--public-url, the URLs of `response_format=url` are made from the Host header the proxy sent (nginx sends its
upstream's, `127.0.0.1:8000`) and `http://`, while the client reached the proxy at another host, or over https. Every
such URL failed in the client's hands (a connection refused, a page's mixed content blocked), and the engine said
nothing.

The proxy says where its client reached it, in X-Forwarded-Host and X-Forwarded-Proto or in Forwarded's host= and
proto= (RFC 7239). Any client can send them, so the URLs are never made from them (engine/http/origins.py): they are
only compared with what the URLs name, and a difference is logged, at most once every _SAY_EVERY_S.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import hdrs, web
from yarl import URL

from engine.http.origins import HOST_HEADER, request_origin
from engine.http.request_ids import REQUEST_ID
from engine.logs.quiet_lines import QuietLines
from protocols.shortened import cut_middle

log = logging.getLogger("argus.http")

_SAY_EVERY_S = 600.0
# a header's value quoted in the line: any client may send one 8 KiB long
_QUOTED_CHARS = 100


class ProxyHints:
    """Image URLs' origins made as origins.request_origin makes them, a proxy's word against them logged."""

    def __init__(self) -> None:
        self._lines = QuietLines(_SAY_EVERY_S)

    def origin(self, request: web.Request) -> str:
        """request_origin(request) (ValueError when the Host header makes no URL), the mismatch logged."""
        origin = request_origin(request)
        forwarded = _forwarded_origin(request, URL(origin))
        if forwarded is None or forwarded[0] == origin:
            return origin
        reached, named_by = forwarded
        held = self._lines.due("forwarded")
        if held is not None:
            log.warning(
                "request %r came through a proxy that says its client reached it at %r (its %s), but its image URLs"
                " name %s, made from its Host header: clients may not reach them. Start the engine with --public-url"
                " where clients reach it (with the path the proxy serves it under, if any)%s",
                request[REQUEST_ID],
                cut_middle(reached, _QUOTED_CHARS, _QUOTED_CHARS // 2),
                named_by,
                origin,
                f"; {held} more such requests since the last such line" if held else "",
            )
        return origin


PROXY_HINTS_KEY = web.AppKey("proxy_hints", ProxyHints)


def _forwarded_origin(request: web.Request, made: URL) -> tuple[str, str] | None:
    """Where the proxy nearest the client says the client reached it, as an origin (`made`'s scheme or host where the
    headers name none), and the headers that said it; None when they name neither or name no URL."""
    forwarded = next(iter(request.forwarded), {}) if request.headers.get(hdrs.FORWARDED) else {}
    proto, proto_from = _said(request, forwarded, "proto", hdrs.X_FORWARDED_PROTO)
    host, host_from = _said(request, forwarded, "host", hdrs.X_FORWARDED_HOST)
    # what names no URL says nothing of where the client is: a proxy writes a scheme and a host[:port]
    proto = proto.lower() if proto.lower() in ("http", "https") else ""
    host = host if HOST_HEADER.fullmatch(host) else ""
    if not (proto or host):
        return None
    try:
        origin = str(URL.build(scheme=proto or made.scheme, authority=host or made.raw_authority).origin())
    except ValueError:  # a port out of range
        return None
    # the headers the quoted values came from: a Forwarded of for= alone beside X-Forwarded-Host was named as the
    # source of a host it never carried, and the operator looked for it in the wrong proxy's settings
    named_by = [source for value, source in ((proto, proto_from), (host, host_from)) if value]
    return origin, " and ".join(named_by)


def _said(request: web.Request, forwarded: Mapping[str, str], parameter: str, header: str) -> tuple[str, str]:
    """A Forwarded `parameter`'s value, else `header`'s first, and where it was read."""
    if value := forwarded.get(parameter):
        return value, f"Forwarded {parameter}="
    return _first(request, header), header


def _first(request: web.Request, header: str) -> str:
    """The first of a header's comma-separated values: the one the proxy nearest the client wrote."""
    return request.headers.get(header, "").partition(",")[0].strip()
