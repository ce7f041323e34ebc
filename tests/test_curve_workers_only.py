"""CURVE on the worker socket alone: `--curve-secret` with `--curve-allow-workers` and no `--curve-allow`, for
workers on other hosts and ZeroMQ clients on the engine's own (which have no keys). It was refused at start
("--curve-secret and --curve-allow go together"): the worker socket could not be secured without the client one."""

import logging
import re
import subprocess

import pytest
import zmq

from engine.cli import build_parser, engine_config
from engine.client import ArgusClient
from engine.commands.arg_types import UsageError
from engine.http.api_keys import ApiKeys
from engine.server import Engine
from engine.zmq.curve_gate import CLIENTS, WORKERS, CurveGate
from engine_process import free_port, in_process_config, said_as_it_exits_2, start_engine, start_worker
from protocols import endpoints
from protocols.client_messages import Images
from protocols.curve import create_key_files, load_public_keys


@pytest.fixture
def keys(tmp_path):
    """The engine's key pair, and a worker's whose public key alone is in workers/ (no clients' directory)."""
    engine_public, engine_secret = create_key_files(tmp_path / "keys", "engine")
    _, worker_secret = create_key_files(tmp_path / "workers", "worker-1")
    (tmp_path / "workers" / "worker-1.key_secret").rename(tmp_path / "keys" / "worker-1.key_secret")
    return {
        "engine_public": engine_public,
        "engine_secret": engine_secret,
        "worker_secret": tmp_path / "keys" / "worker-1.key_secret",
        "workers": tmp_path / "workers",
    }


def test_workers_need_an_admitted_key_and_clients_none(tmp_path, keys):
    """No local worker: whatever is served, the fleet with the admitted key served it."""
    engine = start_engine(
        tmp_path,
        "--time-scale", "0.01",
        "--curve-secret", str(keys["engine_secret"]),
        "--curve-allow-workers", str(keys["workers"]),
        workers=0, backend="sim",
    )  # fmt: skip
    admitted = ["--curve-key", str(keys["worker_secret"]), "--curve-server-key", str(keys["engine_public"])]
    fleet = start_worker(
        engine.worker_address, "sim", "--time-scale", "0.01", "--worker-id", "remote", "--count", "2", *admitted
    )
    keyless = start_worker(engine.worker_address, "sim", "--worker-id", "keyless", stderr=subprocess.PIPE)
    try:
        said = said_as_it_exits_2(keyless)
        assert f"the engine at {engine.worker_address} requires CURVE keys" in said, said
        status = engine.wait_ready(2, timeout_s=60)
        assert sorted(w["name"].split("/")[0] for w in status["workers"]) == ["remote-0", "remote-1"]
        with ArgusClient(engine.client_address, timeout_s=30, curve=None) as client:  # no keys, plain ZeroMQ
            reply = client.generate("a harbour at night", width=64, height=64)
        assert isinstance(reply, Images) and reply.images[0].worker.startswith("remote-")
        assert "listens without CURVE" not in engine.log_path.read_text()  # both sockets on loopback, no API key
    finally:
        assert engine.stop() == 0
        fleet.terminate()  # started by hand, it would wait for the next engine
        fleet.wait(timeout=30)


def test_the_client_socket_beyond_loopback_is_warned_of_naming_the_flag_it_lacks(tmp_path, keys, caplog, monkeypatch):
    """Both doors bound on loopback, taken for beyond it, so that no door opens beyond this host: the client socket,
    without CURVE, is warned of, asking for --curve-allow alone (--curve-secret is given); the worker socket is not."""
    monkeypatch.setattr(endpoints, "is_loopback", lambda host: False)
    client, worker = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    config = in_process_config(
        tmp_path,
        client_listen=(client,),
        worker_listen=(worker,),
        curve_secret_file=str(keys["engine_secret"]),
        curve_workers_dir=str(keys["workers"]),
    )
    caplog.set_level(logging.WARNING, logger="argus.engine")
    Engine(config).close()
    assert (
        f"{client} listens without CURVE: any peer that reaches it can send requests (turn CURVE on with"
        " --curve-allow, docs/scaling.md)" in caplog.text
    ), caplog.text
    assert worker not in caplog.text


def test_an_api_key_warns_of_the_plain_client_socket_on_loopback_too(tmp_path, keys, caplog):
    """Every user of the host reaches loopback: under an API key, the plain client socket is warned of there too."""
    client, worker = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    config = in_process_config(
        tmp_path,
        client_listen=(client,),
        worker_listen=(worker,),
        api_keys=ApiKeys.single("k"),
        curve_secret_file=str(keys["engine_secret"]),
        curve_workers_dir=str(keys["workers"]),
    )
    Engine(config).close()
    assert f"{client} listens without CURVE: any user of this host can send requests without the API key" in (
        caplog.text
    )
    assert "(turn CURVE on with --curve-allow, or listen on an ipc:// file path" in caplog.text
    assert worker not in caplog.text


def test_the_gate_admits_workers_keys_and_asks_no_client_for_one(tmp_path, keys, caplog):
    """The local workers' own key and workers/'s on the worker socket; nothing on the client socket, which has no
    CURVE, and a reload counts the worker socket's keys alone."""
    (worker,) = load_public_keys(keys["workers"])
    caplog.set_level(logging.INFO, logger="argus.curve")
    with zmq.Context() as context:
        gate = CurveGate(context, str(keys["engine_secret"]), None, str(keys["workers"]))
        local = gate.local_worker_keys.own.public
        assert not gate.guards_clients
        assert [gate.admits(WORKERS, key) for key in (worker, local)] == [True, True]
        assert [gate.admits(CLIENTS, key) for key in (worker, local)] == [False, False]
        gate.reload()
    assert "1 admitted on the workers socket (0 added, 0 removed)" in caplog.text
    assert "clients socket" not in caplog.text


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (["--curve-secret", "S"], "--curve-secret goes with --curve-allow DIR (CURVE on both ZeroMQ sockets), "),
        (["--curve-allow", "D"], "--curve-allow goes with --curve-secret (the engine's .key_secret file)"),
        (["--curve-allow-workers", "D"], "--curve-allow-workers goes with --curve-secret"),
        (["--curve-allow", "D", "--curve-allow-workers", "E"], "--curve-allow and --curve-allow-workers go with"),
    ],
)
def test_curve_settings_that_secure_nothing_are_refused(given, says):
    """A directory without the engine's secret key, or the key without a directory: the engine would have run
    without the CURVE asked for (checked before the paths, which need not exist)."""
    with pytest.raises(UsageError, match=f"^{re.escape(says)}"):
        engine_config(build_parser().parse_args(["serve", *given]))


@pytest.mark.parametrize("clients", [False, True], ids=["workers only", "each its own"])
def test_the_secret_with_a_workers_directory_is_taken(keys, tmp_path, clients):
    (tmp_path / "clients").mkdir()
    argv = ["serve", "--curve-secret", str(keys["engine_secret"]), "--curve-allow-workers", str(keys["workers"])]
    argv += ["--curve-allow", str(tmp_path / "clients")] if clients else []
    config = engine_config(build_parser().parse_args(argv))
    assert (config.curve_workers_dir, config.curve_allowed_dir) == (
        str(keys["workers"]),
        str(tmp_path / "clients") if clients else None,
    )
