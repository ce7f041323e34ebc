"""The engine warns at start about a ZeroMQ socket that listens beyond loopback without CURVE: any peer that
reaches it is admitted (on the worker socket, it is sent users' prompts); about one on loopback too when HTTP asks
for an API key (every user of the host reaches it, without the key); and about HTTP beyond loopback without a key."""

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest
from waiting import eventually

from engine import server
from engine.cli import build_parser
from engine.commands.arg_types import UsageError
from engine.http.api_keys import ApiKeys
from engine.server import Engine
from engine.system.listen_checks import warn_if_http_open, warn_if_open
from engine_process import free_port, in_process_config
from protocols.curve import KeyPair, create_key_files

# a TEST-NET-3 address (RFC 5737): not this host's, so its bind fails and nothing is opened beyond loopback (the
# engine refuses to start, naming the flag)
ELSEWHERE = "tcp://203.0.113.7:5556"


def http_keys(key: str | None) -> ApiKeys | None:
    return ApiKeys.single(key) if key else None


@contextlib.asynccontextmanager
async def http_listening(engine: Engine, caplog, address: str) -> AsyncIterator[re.Match]:
    """`engine` run in this process until the block ends; yields its "HTTP API listening on ADDRESS" line's match of
    the pattern `address`."""
    caplog.set_level(logging.INFO, logger="argus.engine")
    running = asyncio.create_task(engine.run())
    try:
        listening = re.compile(rf"HTTP API listening on {address} ")
        assert await eventually(lambda: listening.search(caplog.text), timeout_s=30), caplog.text
        yield listening.search(caplog.text)
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 30)


@pytest.mark.parametrize("warning", ["join as a worker and be sent users' prompts", "send requests"])
def test_a_socket_beyond_loopback_without_curve_is_warned_about(caplog, warning):
    """Checked on the warning itself: a test binds beyond loopback only to an address that fails, and the engine
    warns of a door only once it opened (below)."""
    warn_if_open((ELSEWHERE,), None, warning, api_key=False, curve_flags="--curve-secret and --curve-allow")
    assert (
        f"{ELSEWHERE} listens without CURVE: any peer that reaches it can {warning} (turn CURVE on with --curve-secret"
        " and --curve-allow, docs/scaling.md)" in caplog.text
    )


@pytest.mark.parametrize("socket", ["worker_listen", "client_listen"])
def test_an_address_that_cannot_be_bound_is_refused_without_a_warning_first(tmp_path, caplog, socket):
    """The warnings came before the binds: an address the engine could not listen on was warned of as an open door,
    then refused."""
    with pytest.raises(UsageError, match="Cannot assign requested address"):
        Engine(in_process_config(tmp_path, **{socket: (ELSEWHERE,)}))
    assert "listens without CURVE" not in caplog.text


@pytest.mark.parametrize(
    ("loopback", "api_key", "warned"), [(False, None, True), (False, "k", False), (True, None, False)]
)
def test_http_beyond_loopback_without_an_api_key_is_warned_about(caplog, loopback, api_key, warned):
    """Checked on the warning itself, as a test opens HTTP beyond loopback only under a key (below); whether the
    addresses bound are loopback ones is tests/test_http_hosts.py's."""
    warn_if_http_open("0.0.0.0", 8000, api_key=bool(api_key), loopback=loopback)
    assert ("listens without an API key: any client that reaches it can generate images" in caplog.text) == warned


async def test_the_http_warning_names_the_port_bound_not_port_0(tmp_path, caplog, monkeypatch):
    """`--port 0` was warned of as `HTTP on 0.0.0.0:0`, a port no client can reach, while the engine listened on
    another. On loopback taken for beyond it, so that no door opens beyond this host."""
    monkeypatch.setattr(server, "on_loopback", lambda listener: False)
    engine = Engine(in_process_config(tmp_path, host="127.0.0.1"))
    async with http_listening(engine, caplog, r"http://127\.0\.0\.1:([0-9]+)") as listening:
        port = listening.group(1)
        assert f"HTTP on 127.0.0.1:{port} listens without an API key" in caplog.text, caplog.text
        assert "127.0.0.1:0 " not in caplog.text


def test_the_zeromq_warnings_name_the_ports_bound_not_port_0(tmp_path, caplog):
    """`--client-listen tcp://0.0.0.0:0` was warned of as tcp://0.0.0.0:0, a port no peer can reach, while the engine
    listened on another. On loopback under an API key, where the same warnings come, so that no door opens beyond this
    host."""
    any_port = ("tcp://127.0.0.1:0",)
    config = in_process_config(tmp_path, client_listen=any_port, worker_listen=any_port, api_keys=http_keys("k"))
    engine = Engine(config)
    try:
        [client], worker = engine.clients.endpoints, engine.link.endpoints[-1]
    finally:
        engine.close()
    assert not client.endswith(":0") and not worker.endswith(":0")
    assert f"{client} listens without CURVE: any user of this host can send requests" in caplog.text, caplog.text
    assert f"{worker} listens without CURVE: any user of this host can join as a worker" in caplog.text, caplog.text
    assert "tcp://127.0.0.1:0 " not in caplog.text


@pytest.mark.parametrize(("curve", "api_key"), [(True, None), (True, "k"), (False, None), (False, "k")])
def test_curve_or_loopback_is_not_warned_about(tmp_path, caplog, curve, api_key):
    """Both doors bound on loopback: warned of only without CURVE and with an API key (the case that shows the same
    doors would be). A CURVE door beyond loopback, which a test does not open, is checked on the warning itself.
    Before, the CURVE door was beyond loopback and failed to bind before any warning could come."""
    keys = tmp_path / "keys"
    _, secret = create_key_files(keys, "engine")
    curve_files = {"curve_secret_file": str(secret), "curve_allowed_dir": str(keys)} if curve else {}
    client, worker = f"tcp://127.0.0.1:{free_port()}", f"tcp://localhost:{free_port()}"
    config = in_process_config(
        tmp_path, client_listen=(client,), worker_listen=(worker,), api_keys=http_keys(api_key), **curve_files
    )
    Engine(config).close()
    if curve:
        warn_if_open((ELSEWHERE,), KeyPair.load(secret), "send requests", bool(api_key), "--curve-allow")
    assert ("without CURVE" in caplog.text) == (not curve and bool(api_key)), caplog.text


@pytest.mark.parametrize("api_key", [None, "k"])
def test_a_loopback_socket_without_curve_is_warned_about_when_http_asks_for_a_key(tmp_path, caplog, api_key):
    """With --api-key, an operator who trusts not everyone on the host was told nothing: any user of it could send
    requests over ZeroMQ without the key, or join as a worker and be sent the prompts of every client."""
    client, worker = f"tcp://127.0.0.1:{free_port()}", f"tcp://localhost:{free_port()}"
    private = f"ipc://{tmp_path}/private-clients"  # only this user may open it: never warned about
    keys = http_keys(api_key)
    config = in_process_config(tmp_path, client_listen=(client, private), worker_listen=(worker,), api_keys=keys)
    Engine(config).close()
    bound_worker = worker.replace("localhost", "127.0.0.1")  # warned of as bound (a socket without IPV6 on)
    warned = [f"{client} listens without CURVE: any user of this host can send requests without the API key"]
    warned.append(f"{bound_worker} listens without CURVE: any user of this host can join as a worker and be sent")
    assert [line in caplog.text for line in warned] == [bool(api_key)] * 2
    assert private not in caplog.text


@pytest.mark.parametrize("api_key", [None, "k"])
def test_an_abstract_ipc_socket_without_curve_is_warned_about_as_loopback_is(tmp_path, caplog, api_key):
    """An ipc://@NAME of Linux's abstract namespace has no file to keep other users out: any user of the host could
    join as a worker and be sent the prompts of every client, and it was never warned of, as a socket file is not."""
    name = f"argus-test-{secrets.token_hex(8)}"
    config = in_process_config(
        tmp_path,
        client_listen=(f"ipc://@{name}-clients",),
        worker_listen=(f"ipc://@{name}-workers",),
        api_keys=http_keys(api_key),
    )
    Engine(config).close()
    warned = [
        f"ipc://@{name}-clients listens without CURVE: any user of this host can send requests without the API key",
        f"ipc://@{name}-workers listens without CURVE: any user of this host can join as a worker and be sent",
    ]
    assert [line in caplog.text for line in warned] == [bool(api_key)] * 2, caplog.text
    assert "any peer that reaches it" not in caplog.text  # not beyond this host


def test_an_ipv6_host_is_warned_about_in_brackets(caplog):
    warn_if_http_open("::", 8000, api_key=False, loopback=False)
    assert "HTTP on [::]:8000 listens without an API key" in caplog.text


async def test_the_http_address_logged_on_an_ipv6_host_is_one_a_client_can_fetch(tmp_path, caplog):
    """`--host ::1` was logged as http://::1:PORT, `--host ::` as http://:::PORT: no client takes either."""
    engine = Engine(in_process_config(tmp_path, host="::1"))
    async with http_listening(engine, caplog, r"(\S+)") as listening:
        url = listening.group(1)
        assert re.fullmatch(r"http://\[::1\]:[0-9]+", url), url
        async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as reply:
            assert reply.status == 200


async def test_http_on_the_ipv6_wildcard_serves_ipv4_clients_too(tmp_path, caplog):
    """`--host ::` is what the engine names for every interface (an empty --host is refused so), and what its
    listener checks take to cover IPv4's addresses too; asyncio opens it IPv6-only, and every IPv4 client was
    refused its connection. Under an API key: for its moment on every interface, the engine serves no one else."""
    engine = Engine(in_process_config(tmp_path, host="::", api_keys=http_keys(secrets.token_hex(16))))
    async with http_listening(engine, caplog, r"http://\[::\]:([0-9]+)") as listening:
        port = listening.group(1)
        async with aiohttp.ClientSession() as session:
            for address in ("127.0.0.1", "[::1]"):
                async with session.get(f"http://{address}:{port}/health") as reply:
                    assert reply.status == 200, address


async def test_http_on_ipv6_loopback_written_in_brackets_listens_there_unwarned(tmp_path, caplog):
    """`--host [::1]`, as a URL and --client-listen write it, was refused: "Name or service not known"."""
    host = build_parser().parse_args(["serve", "--host", "[::1]"]).host
    engine = Engine(in_process_config(tmp_path, host=host))
    async with http_listening(engine, caplog, r"http://\[::1\]:([0-9]+)"):
        assert "listens without an API key" not in caplog.text
