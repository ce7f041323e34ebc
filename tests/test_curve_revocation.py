"""A CURVE key removed and reloaded (SIGHUP) stops its peers that are still connected: ZeroMQ checks a key only at
the handshake, and a revoked worker kept being sent users' prompts, a revoked client kept being served."""

import signal
import subprocess
import sys

from waiting import wait_for

from engine.client import ArgusClient
from engine_process import ROOT, start_engine
from protocols.client_messages import Error, Images
from protocols.curve import ClientKeys, create_key_files


def test_a_revoked_worker_is_dropped_and_a_revoked_client_refused_without_reconnecting(tmp_path):
    engine_public, engine_secret = create_key_files(tmp_path / "keys", "engine")
    revoked_client_public, revoked_client_secret = create_key_files(tmp_path / "clients", "revoked")
    _, kept_client_secret = create_key_files(tmp_path / "clients", "kept")
    worker_public, worker_secret = create_key_files(tmp_path / "workers", "worker")
    engine = start_engine(
        tmp_path,
        "--time-scale", "0.01",
        "--curve-secret", str(engine_secret),
        "--curve-allow", str(tmp_path / "clients"),
        "--curve-allow-workers", str(tmp_path / "workers"),
        workers=1, backend="sim",
    )  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "worker", "--connect", engine.worker_address, "--backend", "sim",
         "--worker-id", "remote", "--curve-key", str(worker_secret), "--curve-server-key", str(engine_public)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    revoked = ArgusClient(
        engine.client_address, timeout_s=30, curve=ClientKeys.from_files(revoked_client_secret, engine_public)
    )
    kept = ArgusClient(
        engine.client_address, timeout_s=30, curve=ClientKeys.from_files(kept_client_secret, engine_public)
    )
    try:
        engine.wait_ready(2, timeout_s=60)
        assert isinstance(revoked.generate("before", width=64, height=64), Images)
        assert isinstance(kept.generate("before", width=64, height=64), Images)

        revoked_client_public.unlink()
        worker_public.unlink()
        engine.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "CURVE keys reloaded" in engine.log()), engine.log()

        # the same connections as before: no new handshake for ZeroMQ to refuse
        refused = revoked.generate("after its key was removed", width=64, height=64)
        assert isinstance(refused, Error) and refused.code == "unauthorized", refused
        assert isinstance(kept.generate("after", width=64, height=64), Images)
        assert worker.wait(timeout=30) == 2
        assert "CURVE key is no longer admitted" in worker.stderr.read()
        assert [w["name"].split("/")[0] for w in engine.ready()["workers"]] == ["local-0"]
        assert engine.metric("argus_worker_losses_total", cause="revoked") == 1
        assert engine.metric("argus_door_refusals_total", door="zmq", code="unauthorized") == 1
    finally:
        revoked.close()
        kept.close()
        assert engine.stop() == 0
        worker.kill()
        worker.wait()
