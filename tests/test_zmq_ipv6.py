"""ZeroMQ addresses with an IPv6 host: the engine listens on them, and a hand-started worker and a client dial them.
libzmq takes IPv6 only on a socket with its IPV6 option on, which none had: the engine refused `--client-listen
tcp://[::1]:5555` as "No such device", and a worker or client given such an address dialled nothing, without a word,
for ever."""

import subprocess

from engine.client import ArgusClient
from engine_process import free_port, start_engine, start_worker
from protocols.client_messages import Images


def test_a_worker_and_a_client_on_ipv6_loopback_are_served(tmp_path):
    client_address, worker_address = f"tcp://[::1]:{free_port()}", f"tcp://[::1]:{free_port()}"
    more = ("--client-listen", client_address, "--worker-listen", worker_address)
    engine = start_engine(tmp_path, *more, workers=0, backend="sim", wait=False)
    worker = None
    try:
        worker = start_worker(worker_address, "sim", "--time-scale", "0", stderr=subprocess.DEVNULL)
        engine.wait_ready(1, timeout_s=60)
        with ArgusClient(client_address, timeout_s=60) as client:
            reply = client.generate("a fox on a hill", width=64, height=64)
        assert isinstance(reply, Images), reply
        assert f"ZeroMQ clients: {engine.client_address}, {client_address}" in engine.log()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        assert engine.stop() == 0
