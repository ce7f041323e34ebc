"""An engine that cannot start (a port in use) closes what it opened: no folder, socket or thread is left."""

import socket
import tempfile
import threading

import pytest
import zmq

from engine.server import Engine
from engine_process import in_process_config
from protocols.curve import create_key_files


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """Where the engine makes its temporary folders (its IPC socket, a run's keys)."""
    root = tmp_path / "temp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture
def busy_port():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


async def test_an_http_port_in_use_leaves_nothing_open(tmp_path, temp_root, busy_port):
    keys = tmp_path / "keys"
    _, secret = create_key_files(keys, "engine")
    threads = set(threading.enumerate())
    engine = Engine(
        in_process_config(tmp_path, port=busy_port, curve_secret_file=str(secret), curve_allowed_dir=str(keys))
    )
    with pytest.raises(OSError):
        await engine.run()
    assert list(temp_root.iterdir()) == []
    assert set(threading.enumerate()) <= threads  # the CURVE gate's thread stopped
    Engine(in_process_config(tmp_path)).close()  # the ZeroMQ addresses are free again


def test_a_worker_port_in_use_leaves_nothing_open(tmp_path, temp_root, busy_port):
    with pytest.raises(zmq.ZMQError):
        Engine(in_process_config(tmp_path, worker_listen=(f"tcp://127.0.0.1:{busy_port}",)))
    assert list(temp_root.iterdir()) == []
    Engine(in_process_config(tmp_path)).close()
