"""An engine whose workers fail its CURVE handshake says so: a worker given the wrong engine public key (the engine
given a new key pair) or none at all was never heard, and the engine's log said nothing of it. libzmq dials again
every 100 ms: the line is said once a minute, counting the rest."""

import subprocess
import sys
import time

import zmq
from test_curve import argus_keys
from waiting import wait_for
from zmq.utils.monitor import recv_monitor_message

from engine_process import ROOT, start_engine
from protocols.curve import ClientKeys, KeyPair
from protocols.sockets import make_socket

WRONG_KEY = "a handshake on the workers socket ({address}) failed: its hello cannot be opened with this engine's key"
NO_CURVE = "a handshake on the workers socket ({address}) failed: it uses no CURVE"


def start_worker(address: str, worker_id: str, *curve: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "engine.cli", "worker", "--connect", address, "--backend", "sim"]
    command += ["--worker-id", worker_id, *curve]
    return subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)


def failed_handshakes(sock: zmq.Socket, monitor: zmq.Socket, count: int) -> None:
    """Waits until `count` handshakes of the socket failed (the engine hangs up on each without a word)."""
    failed = 0
    deadline = time.monotonic() + 60
    while failed < count and time.monotonic() < deadline:
        if monitor.poll(1000) and recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            failed += 1
    assert failed == count


def test_handshakes_a_worker_fails_are_said_with_why_once_per_interval(tmp_path):
    engine_public, engine_secret = argus_keys(tmp_path, "engine")
    _, old_engine_secret = argus_keys(tmp_path / "old", "engine")  # the pair the engine had before
    _, worker_secret = argus_keys(tmp_path / "admitted", "worker")
    _, stranger_secret = argus_keys(tmp_path / "strangers", "stranger")
    engine = start_engine(
        tmp_path, "--curve-secret", str(engine_secret), "--curve-allow", str(tmp_path / "admitted"),
        workers=0, backend="sim", wait=False,
    )  # fmt: skip
    address = engine.worker_address
    workers = []
    context = zmq.Context()
    try:
        engine.wait_ready(0)
        # started at once, as each fails its own way, said in lines of their own (per reason): a worker given the
        # engine's old public key, which gives up after a dozen handshakes, each failed; a worker without CURVE keys;
        # and one whose key the engine does not admit
        old_public = tmp_path / "old" / "engine.key"
        workers.append(start_worker(engine.worker_address, "old-key", "--curve-key", str(worker_secret),
                                    "--curve-server-key", str(old_public)))  # fmt: skip
        workers.append(start_worker(engine.worker_address, "no-keys"))
        workers.append(start_worker(engine.worker_address, "stranger", "--curve-key", str(stranger_secret),
                                    "--curve-server-key", str(engine_public)))  # fmt: skip
        # and a peer that never gives up: libzmq dials again every 100 ms
        old_keys = ClientKeys(KeyPair.load(worker_secret), KeyPair.load(old_engine_secret).public)
        sock = make_socket(context, zmq.DEALER, curve_client=old_keys)
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        sock.connect(engine.worker_address)
        failed_handshakes(sock, monitor, 20)
        sock.disable_monitor()
        monitor.close()
        sock.close()
        for worker in workers:
            assert worker.wait(timeout=60) == 2
        refused = f"refused a peer at 127.0.0.1 whose public key {KeyPair.load(stranger_secret).public.decode()}"
        assert wait_for(lambda: refused in engine.log_path.read_text())
    finally:
        context.destroy(linger=0)
        stopped = engine.stop()
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert stopped == 0
    said = [line for line in engine.log_path.read_text().splitlines() if "argus.curve" in line]
    wrong_key = [line for line in said if WRONG_KEY.format(address=address) in line]
    # the worker's dozen and the peer's 20 failed in the minute: one line for all
    assert len(wrong_key) == 1, said
    assert "likely given another public key for this engine" in wrong_key[0]
    # the worker without keys: said when the engine reads its greeting before it hangs up (it mostly does, not always)
    assert len([line for line in said if NO_CURVE.format(address=address) in line]) <= 1, said
