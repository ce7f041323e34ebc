"""X-Forwarded-For read only as far as trusted proxies vouch for it (engine/http/forwarded_for.py)."""

import ipaddress

import pytest

from engine.commands.arg_types import comma_separated, ip_network
from engine.http.forwarded_for import TrustedProxies

PROXY = "10.0.0.5"


def proxies(*networks: str) -> TrustedProxies:
    return TrustedProxies(ipaddress.ip_network(n, strict=False) for n in networks)


def test_the_address_the_trusted_proxy_appended_names_the_client():
    assert proxies("10.0.0.0/24").client_address(PROXY, ["203.0.113.7"]) == "203.0.113.7"


def test_what_the_client_put_in_the_header_is_not_reached():
    # the client sent "X-Forwarded-For: 1.2.3.4"; the proxy appended the address it saw
    assert proxies("10.0.0.0/24").client_address(PROXY, ["1.2.3.4, 203.0.113.7"]) == "203.0.113.7"


def test_a_chain_of_trusted_proxies_is_walked_to_the_first_address_not_trusted():
    chain = proxies("10.0.0.0/24", "192.168.1.1")
    assert chain.client_address(PROXY, ["1.2.3.4, 203.0.113.7, 192.168.1.1"]) == "203.0.113.7"
    # several headers are one list, in the order they came
    assert chain.client_address(PROXY, ["1.2.3.4, 203.0.113.7", "192.168.1.1"]) == "203.0.113.7"


def test_a_peer_not_trusted_is_the_client_whatever_it_sends():
    assert proxies("10.0.0.0/24").client_address("198.51.100.1", ["203.0.113.7"]) == "198.51.100.1"
    assert proxies().client_address(PROXY, ["203.0.113.7"]) == PROXY


def test_an_entry_that_is_no_address_ends_the_walk_at_the_hop_that_passed_it_on():
    assert proxies("10.0.0.0/24").client_address(PROXY, ["unknown"]) == PROXY
    assert proxies("10.0.0.0/24").client_address(PROXY, ["203.0.113.7, _hidden, 10.0.0.9"]) == "10.0.0.9"


def test_an_entry_written_with_its_port_names_the_address_alone():
    """Azure's Application Gateway appends `IP:port`: each entry was taken for no address, and every client behind it
    was the gateway, one client for the queue's shares. The port is the client's connection's, not the client."""
    gateway = proxies("10.0.0.0/24")
    assert gateway.client_address(PROXY, ["203.0.113.7:49152"]) == "203.0.113.7"
    assert gateway.client_address(PROXY, ["[2001:db8::7]:49152"]) == "2001:db8::7"
    assert gateway.client_address(PROXY, ["[2001:db8::7]"]) == "2001:db8::7"
    # a trusted hop written with its port is walked past too; a name with a port is still no address
    assert gateway.client_address(PROXY, ["203.0.113.7:1, 10.0.0.9:2"]) == "203.0.113.7"
    assert gateway.client_address(PROXY, ["proxy.local:80"]) == PROXY
    assert gateway.client_address(PROXY, ["[2001:db8::7]x"]) == PROXY


def test_all_trusted_gives_the_leftmost_and_no_header_the_peer():
    assert proxies("10.0.0.0/8").client_address(PROXY, ["10.1.1.1, 10.2.2.2"]) == "10.1.1.1"
    assert proxies("10.0.0.0/8").client_address(PROXY, []) == PROXY


def test_an_ipv4_peer_on_a_dual_stack_socket_matches_its_ipv4_network():
    assert proxies("10.0.0.0/24").client_address("::ffff:10.0.0.5", ["203.0.113.7"]) == "203.0.113.7"
    assert proxies("2001:db8::/32").client_address("2001:db8::1", ["2001:db8:ffff::1, 2a00::9"]) == "2a00::9"


def test_the_flag_takes_addresses_and_networks_and_names_what_it_refuses():
    parse = comma_separated(ip_network)
    assert parse("127.0.0.1, 10.0.0.1/8") == [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]
    with pytest.raises(Exception, match="'proxy.local' is not an IP address or network"):
        parse("proxy.local")
