"""A worker or fleet with CURVE keys whose engine comes back on its address with another key pair: every handshake
fails without a word, as it does through a proxy to an engine that is down (or not up yet). The first can never serve
and says so, exit 2; the second waits for the engine and serves it."""

import pytest
from tcp_proxy import DroppingProxy
from waiting import wait_for

from engine_process import free_port, start_engine, start_worker
from protocols.curve import create_key_files


@pytest.fixture
def keys(tmp_path):
    """The engine's first and second key pairs (public, secret), and the workers' secret key with its folder."""
    first = create_key_files(tmp_path / "first", "engine")
    second = create_key_files(tmp_path / "second", "engine")
    _, worker_secret = create_key_files(tmp_path / "workers", "worker")
    return first, second, worker_secret, tmp_path / "workers"


def _start_engine(tmp_path, secret, allowed, worker_port):
    curve = ["--curve-secret", str(secret), "--curve-allow-workers", str(allowed), "--curve-allow", str(allowed)]
    return start_engine(tmp_path, *curve, workers=0, backend="sim", worker_port=worker_port, wait=False)


def _start_workers(tmp_path, connect, worker_secret, engine_public):
    """A lone sim worker and a fleet of 3, with keys, and where each logs."""
    keys = ["--curve-key", str(worker_secret), "--curve-server-key", str(engine_public), "--time-scale", "0.01"]
    logs = [tmp_path / "lone.log", tmp_path / "fleet.log"]
    with open(logs[0], "wb") as lone_log, open(logs[1], "wb") as fleet_log:
        workers = [
            start_worker(connect, "sim", *keys, stderr=lone_log),
            start_worker(connect, "sim", "--count", "3", *keys, stderr=fleet_log),
        ]
    return workers, logs


def test_a_worker_and_a_fleet_whose_engine_came_back_with_another_key_pair_say_so_and_exit_2(tmp_path, keys):
    """They waited for ever, warned that the engine had stopped and that they waited for the next one, which was
    there, failing each of their handshakes."""
    (first_public, first_secret), (_, second_secret), worker_secret, allowed = keys
    worker_port = free_port()
    first = _start_engine(tmp_path, first_secret, allowed, worker_port)
    workers, logs = _start_workers(tmp_path, first.worker_address, worker_secret, first_public)
    second = None
    try:
        first.wait_ready(4, timeout_s=60)
        assert first.stop() == 0
        second = _start_engine(tmp_path, second_secret, allowed, worker_port)
        for worker, log in zip(workers, logs, strict=True):
            assert worker.wait(timeout=60) == 2, log.read_text()
            said = (
                f"every handshake with the engine at {first.worker_address} has failed since it was reached, and it"
                " answers as ZeroMQ: the engine's public key given is not its own"
            )
            assert said in log.read_text(), log.read_text()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        if second is not None:
            assert second.stop() == 0


def test_a_worker_and_a_fleet_behind_a_proxy_serve_their_engine_again_after_its_restart(tmp_path, keys):
    """The proxy takes each connection while the engine is down and closes it, a handshake failed without a word:
    not an engine that refuses them."""
    (public, secret), _, worker_secret, allowed = keys
    worker_port = free_port()
    proxy = DroppingProxy(worker_port)
    engine = _start_engine(tmp_path, secret, allowed, worker_port)
    workers, logs = _start_workers(tmp_path, proxy.address, worker_secret, public)
    try:
        engine.wait_ready(4, timeout_s=60)
        assert engine.stop() == 0
        # handshakes failed through the proxy, twice the ten that judge an address no engine's, before it is back
        turned_away = proxy.turned_away
        assert wait_for(lambda: proxy.turned_away >= turned_away + 20)
        engine = _start_engine(tmp_path, secret, allowed, worker_port)
        engine.wait_ready(4, timeout_s=60)
        assert [worker.poll() for worker in workers] == [None, None], [log.read_text() for log in logs]
    finally:
        for worker in workers:
            worker.kill()
        assert engine.stop() == 0
        proxy.close()


def test_a_worker_and_a_fleet_started_through_a_proxy_before_their_engine_wait_for_it(tmp_path, keys):
    """Each connection the proxy took and closed was a handshake failed without a word: after ten, both were refused
    in a second and exited 2, told that the engine's public key given was not its own."""
    (public, secret), _, worker_secret, allowed = keys
    worker_port = free_port()
    proxy = DroppingProxy(worker_port)
    workers, logs = _start_workers(tmp_path, proxy.address, worker_secret, public)
    engine = None
    try:
        assert wait_for(lambda: proxy.turned_away >= 40)
        engine = _start_engine(tmp_path, secret, allowed, worker_port)
        engine.wait_ready(4, timeout_s=60)
        assert [worker.poll() for worker in workers] == [None, None], [log.read_text() for log in logs]
    finally:
        for worker in workers:
            worker.kill()
        if engine is not None:
            assert engine.stop() == 0
        proxy.close()
