"""CurveGate's keys in process (its authenticator thread not started): which key each socket admits, before and
after a reload, and what a refusal or an empty directory is logged as; test_curve covers the same through engines."""

import logging

import zmq

from engine.zmq.curve_gate import CLIENTS, WORKERS, CurveGate, _AllowedKeys
from protocols.curve import create_key_files, load_public_keys


def test_each_socket_admits_its_own_directorys_keys_and_the_workers_one_the_local_workers_key(tmp_path):
    _, secret = create_key_files(tmp_path / "keys", "engine")
    create_key_files(tmp_path / "clients", "client-1")
    worker_public, _ = create_key_files(tmp_path / "workers", "worker-1")
    (client,), (worker,) = load_public_keys(tmp_path / "clients"), load_public_keys(tmp_path / "workers")
    with zmq.Context() as context:
        gate = CurveGate(context, str(secret), str(tmp_path / "clients"), str(tmp_path / "workers"))
        local = gate.local_worker_keys.own.public
        assert [gate.admits(CLIENTS, key) for key in (client, worker, local)] == [True, False, False]
        assert [gate.admits(WORKERS, key) for key in (client, worker, local)] == [False, True, True]
        worker_public.unlink()
        gate.reload()
        assert not gate.admits(WORKERS, worker) and gate.admits(WORKERS, local)


def test_an_empty_clients_directory_beside_a_workers_one_says_no_client_can_connect(tmp_path, caplog):
    _, secret = create_key_files(tmp_path / "keys", "engine")
    (tmp_path / "clients").mkdir()
    create_key_files(tmp_path / "workers", "worker-1")
    caplog.set_level(logging.WARNING, logger="argus.curve")
    with zmq.Context() as context:
        CurveGate(context, str(secret), str(tmp_path / "clients"), str(tmp_path / "workers"))
    assert "holds no public key (*.key): no client can connect" in caplog.text


def test_a_refused_peer_is_logged_with_its_address(caplog):
    allowed = _AllowedKeys({CLIENTS: set(), WORKERS: set()})
    allowed.peer_address = "192.0.2.7"
    caplog.set_level(logging.WARNING, logger="argus.curve")
    assert not allowed.callback(CLIENTS, b"stranger")
    assert "refused a peer at 192.0.2.7 whose public key stranger" in caplog.text
