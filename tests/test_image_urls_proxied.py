"""Behind a reverse proxy without --public-url, image URLs are made from the Host header the proxy sent: nginx sends its
upstream's (127.0.0.1:8000), and the URLs are http:// where the client reached the proxy over https. Every such URL
failed in the client's hands and the engine said nothing; it now logs a warning naming --public-url when the proxy's
X-Forwarded-Host and -Proto (or Forwarded) say the client reached it elsewhere, still never making URLs from them."""

import logging
from contextlib import asynccontextmanager

import aiohttp
import pytest

from engine_process import ready_sim_engine

WARNED = "came through a proxy that says its client reached it at"


@asynccontextmanager
async def sim_engine(tmp_path):
    """A ready engine, and the Host nginx sends it by default: its proxy_pass's."""
    async with ready_sim_engine(tmp_path) as (_, port):
        yield f"127.0.0.1:{port}"


async def url_of(session: aiohttp.ClientSession, upstream: str, **headers: str) -> str:
    body = {"prompt": "a", "size": "64x64", "response_format": "url"}
    address = f"http://{upstream}/v1/images/generations"
    async with session.post(address, json=body, headers={"Host": upstream, **headers}) as reply:
        assert reply.status == 200, await reply.text()
        (entry,) = (await reply.json())["data"]
    return entry["url"]


def warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if WARNED in record.getMessage()]


async def test_image_urls_a_proxy_says_its_client_cannot_reach_are_warned_of_naming_public_url(tmp_path, caplog):
    async with sim_engine(tmp_path) as upstream, aiohttp.ClientSession() as session:
        caplog.set_level(logging.WARNING, "argus.http")
        # a proxy whose client reached it where the URLs name: nothing to say
        same = await url_of(session, upstream, **{"X-Forwarded-Proto": "http", "X-Forwarded-Host": upstream})
        assert same.startswith(f"http://{upstream}/v1/images/files/")
        assert WARNED not in caplog.text
        # a TLS proxy at a public name: the URLs are still made from the Host header, and the operator is told
        proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "images.example.com"}
        assert (await url_of(session, upstream, **proxied)).startswith(f"http://{upstream}/v1/images/files/")
        (line,) = warnings(caplog)
        assert "'https://images.example.com'" in line and f"name http://{upstream}" in line
        assert "--public-url" in line and "(its X-Forwarded-Proto and X-Forwarded-Host)" in line
        # said once in a while, not at every request: any client may send the headers
        await url_of(session, upstream, Forwarded="for=203.0.113.9;proto=https;host=images.example.com")
        assert sum(WARNED in record.getMessage() for record in caplog.records) == 1


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        # a proxy that adds its hop to Forwarded (for= alone) behind one that sets X-Forwarded-Host: the host quoted
        # is X-Forwarded-Host's, which the line named "Forwarded header"
        ({"Forwarded": "for=203.0.113.9", "X-Forwarded-Host": "images.example.com"}, "(its X-Forwarded-Host)"),
        (
            {"Forwarded": "for=203.0.113.9;proto=https", "X-Forwarded-Host": "images.example.com"},
            "(its Forwarded proto= and X-Forwarded-Host)",
        ),
        (
            {"Forwarded": "for=203.0.113.9;proto=https;host=images.example.com"},
            "(its Forwarded proto= and Forwarded host=)",
        ),
    ],
)
async def test_the_warning_names_the_headers_its_quoted_values_came_from(tmp_path, caplog, headers, named):
    async with sim_engine(tmp_path) as upstream, aiohttp.ClientSession() as session:
        caplog.set_level(logging.WARNING, "argus.http")
        await url_of(session, upstream, **headers)
        (line,) = warnings(caplog)
        assert "reached it at 'http" in line and "images.example.com'" in line and named in line
