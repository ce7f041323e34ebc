"""The origin of image URLs made for a request without --public-url: its Host header, else the address it came to."""

from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from engine.http.origins import request_origin


def _came_to(sockname: tuple, headers: dict[str, str]) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: sockname if name == "sockname" else default
    return make_mocked_request("POST", "/v1/images/generations", headers=headers, transport=transport)


@pytest.mark.parametrize(
    ("sockname", "origin"),
    [
        (("127.0.0.1", 8000), "http://127.0.0.1:8000"),
        (("::1", 8000, 0, 0), "http://[::1]:8000"),
        # an IPv4 client on the dual-stack socket of --host ::: it was http://[::ffff:7f00:1]:8000
        (("::ffff:127.0.0.1", 8000, 0, 0), "http://127.0.0.1:8000"),
    ],
)
def test_a_request_without_a_host_header_is_given_the_address_it_came_to(sockname, origin):
    assert request_origin(_came_to(sockname, {})) == origin


def test_the_host_header_names_the_origin_when_sent():
    request = _came_to(("::ffff:127.0.0.1", 8000, 0, 0), {"Host": "images.example:8443"})
    assert request_origin(request) == "http://images.example:8443"
