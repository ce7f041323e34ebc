"""One parser of ZeroMQ addresses (protocols/endpoints.py) for the flags, the client, the sockets and the checks made
of them: what one took, another refused later (a traceback), or dialled for ever without a word."""

import asyncio

import pytest
import zmq

from engine.cli import build_parser
from engine.client import ArgusClient
from protocols.endpoints import Endpoint, NotAnEndpoint, is_loopback, parse_endpoint, parse_host_port
from protocols.sockets import bind_all, dial, make_socket


@pytest.mark.parametrize(
    ("text", "listening", "parsed"),
    [
        ("tcp://127.0.0.1:5555", False, Endpoint("tcp", "127.0.0.1", 5555)),
        ("tcp://gpu-7.example:5556", False, Endpoint("tcp", "gpu-7.example", 5556)),
        ("tcp://[::1]:5556", False, Endpoint("tcp", "::1", 5556, ipv6=True)),
        ("tcp://::1:5556", False, Endpoint("tcp", "::1", 5556, ipv6=True)),
        ("tcp://[fe80::1%eth0]:5556", False, Endpoint("tcp", "fe80::1%eth0", 5556, ipv6=True)),
        # brackets turn IPV6 on whatever they hold, as they did: [127.0.0.1] listens as ::ffff:127.0.0.1
        ("tcp://[127.0.0.1]:5556", False, Endpoint("tcp", "127.0.0.1", 5556, ipv6=True)),
        ("tcp://10.0.0.2:0;10.0.0.7:5556", False, Endpoint("tcp", "10.0.0.7", 5556, source="10.0.0.2:0")),
        ("tcp://127.0.0.1:0;[::1]:5556", False, Endpoint("tcp", "::1", 5556, source="127.0.0.1:0", ipv6=True)),
        ("tcp://*:5555", True, Endpoint("tcp", "*", 5555)),
        ("tcp://0.0.0.0:0", True, Endpoint("tcp", "0.0.0.0", 0)),
        ("tcp://[::]:*", True, Endpoint("tcp", "::", 0, ipv6=True)),
        ("tcp://eth0:05555", True, Endpoint("tcp", "eth0", 5555)),
        ("ipc:///run/argus/workers", False, Endpoint("ipc", path="/run/argus/workers")),
        ("ipc://@abstract", True, Endpoint("ipc", path="@abstract")),
    ],
)
def test_an_address_is_parsed(text, listening, parsed):
    assert parse_endpoint(text, listening) == parsed


@pytest.mark.parametrize(
    ("text", "listening", "why"),
    [
        ("localhost:5555", False, ""),
        ("http://127.0.0.1:5555", False, ""),
        ("inproc://door", True, ""),
        ("ipc://", True, ""),
        ("tcp://127.0.0.1", True, ""),
        ("tcp://127.0.0.1:", True, ""),
        ("tcp://:5555", True, ""),
        ("tcp://[]:5555", True, ""),
        ("tcp://a:b:5555", True, ""),  # a host of colons is an IPv6 address or none
        ("tcp://127.0.0.1:５５５５", True, ""),  # digits int() reads, and ZeroMQ does not
        ("tcp://127.0.0.1:70000", True, "a PORT is at most 65535"),
        ("tcp://127.0.0.1:0", False, "PORT 0 (any free port) is for listening"),
        ("tcp://127.0.0.1:*", False, "PORT * (any free port) is for listening"),
        ("tcp://*:5556", False, "* (every interface) is for listening: dial the engine's host"),
        ("tcp://10.0.0.2:0;127.0.0.1:5555", True, "a SOURCE; is for dialling, not for listening"),
        ("tcp://10.0.0.2;127.0.0.1:5556", False, "SOURCE; is a HOST:PORT (PORT 0 for any)"),
        ("tcp://;127.0.0.1:5556", False, "SOURCE; is a HOST:PORT (PORT 0 for any)"),
    ],
)
def test_what_is_no_address_says_why(text, listening, why):
    with pytest.raises(NotAnEndpoint) as refused:
        parse_endpoint(text, listening)
    assert refused.value.why.startswith(why) and (why or not refused.value.why)
    assert str(refused.value).startswith(f"expected tcp://HOST:PORT or ipc://PATH, not {text!r}")


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1:6379", True), ("[::1]:6379", True), ("localhost:6379", True), ("10.0.0.7:6379", False)],
)
def test_a_host_and_port_without_a_scheme_is_parsed(address, loopback):
    assert parse_host_port(address).loopback == loopback


# IPv4's short, hex and octal forms (inet_aton(3)) among them: `--host 127.1` listened on loopback, and was warned of
# as open and left without the guard against DNS rebinding (tests/test_http_hosts.py)
LOOPBACK = ["127.0.0.1", "127.1", "0x7f.0.0.1", "2130706433", "0177.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"]


# loopback's names in Fedora's and RHEL's hosts file: the HTTP door answered them as loopback, while `argus serve --host
# localhost.localdomain` started as open (warned of, and without the door's guard against DNS rebinding)
LOOPBACK_NAMES = ["localhost.localdomain", "LOCALHOST4.localdomain4.", "localhost6.localdomain6"]


@pytest.mark.parametrize("host", [*LOOPBACK, *LOOPBACK_NAMES, "localhost", "LOCALHOST.", "images.localhost"])
def test_every_spelling_of_loopback_is_loopback(host):
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        *("0.0.0.0", "::", "*", "0", "10.1", "192.168.1.20", "::ffff:10.0.0.1", "eth0", "gpu-7.example", "127.1 x"),
        *("lan-host.localdomain", "localhost.localdomain.attacker.example", "localdomain"),
    ],
)
def test_what_is_not_loopback_alone_is_not_loopback(host):
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["127.1", "0x7f.0.0.1", "2130706433"])
async def test_a_short_form_of_ipv4_loopback_is_what_http_and_zeromq_listen_on(host):
    """What is_loopback decides is what the engine's doors bind: asyncio's listener (HTTP) and ZeroMQ's."""
    listener = await asyncio.get_running_loop().create_server(asyncio.Protocol, host, 0)
    try:
        assert [s.getsockname()[0] for s in listener.sockets] == ["127.0.0.1"]
    finally:
        listener.close()
    context = zmq.Context()
    try:
        [bound] = bind_all(make_socket(context, zmq.ROUTER), [f"tcp://{host}:0"])
        assert parse_endpoint(bound).host == "127.0.0.1"
    finally:
        context.destroy(linger=0)


# Each was taken by the flag, then refused by ZeroMQ as the worker dialled it (a traceback, and under --launcher ray,
# actor after actor), or dialled for ever: a SOURCE without its port, from which libzmq dials nothing
@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("tcp://*:5556", "* (every interface) is for listening"),  # --worker-listen's, copied
        ("tcp://;127.0.0.1:5556", "SOURCE; is a HOST:PORT"),
        ("tcp://127.0.0.1;127.0.0.1:5556", "SOURCE; is a HOST:PORT"),
        ("tcp://127.0.0.1:５５５６", ""),
    ],
)
@pytest.mark.parametrize(
    "argv", [["worker", "--backend", "sim", "--connect"], ["serve", "--launcher", "ray", "--ray-connect"]]
)
def test_an_address_no_worker_can_dial_is_refused_by_its_flag(argv, address, why, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*argv, address])
    assert exited.value.code == 2
    assert f"expected tcp://HOST:PORT or ipc://PATH, not '{address}'{why and ': ' + why}" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--client-listen", "--worker-listen"])
def test_a_source_address_to_listen_on_is_refused_by_its_flag(flag, capsys):
    """It was taken, and the engine refused it only as it bound it: 'Invalid argument'."""
    address = "tcp://10.0.0.2:0;127.0.0.1:5555"
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", flag, address])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"argus serve: error: argument {flag}: expected tcp://HOST:PORT or ipc://PATH, not '{address}': a SOURCE; is"
        " for dialling, not for listening"
    )


def test_a_client_given_a_listening_address_is_refused_as_it_is_made():
    """It was made, then ZeroMQ's 'Invalid argument' (a ZMQError) came from its connect: --client-listen tcp://*:5555
    copied into a program."""
    with pytest.raises(ValueError, match=r"'tcp://\*:5555': expected the engine's ZeroMQ client address, .*: \* \("):
        ArgusClient("tcp://*:5555", timeout_s=1)


def test_an_ipv6_address_without_brackets_is_listened_on_and_dialled():
    """Taken by every flag and by the client, it was refused by ZeroMQ as the engine bound it ('No such device'), and
    a worker or client dialled it for ever, without a word: its socket's IPV6 option was on only for tcp://[."""
    assert build_parser().parse_args(["serve", "--client-listen", "tcp://::1:0"]).client_listen == ["tcp://::1:0"]
    context = zmq.Context()
    try:
        router = make_socket(context, zmq.ROUTER)
        [bound] = bind_all(router, ["tcp://::1:0"])
        dealer = make_socket(context, zmq.DEALER)
        dial(dealer, f"tcp://::1:{parse_endpoint(bound).port}")
        dealer.send(b"hello")
        assert router.poll(10_000), "nothing came"
        assert router.recv_multipart()[-1] == b"hello"
    finally:
        context.destroy(linger=0)
