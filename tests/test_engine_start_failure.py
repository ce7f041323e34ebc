"""An engine that cannot start (a port or an ipc:// path in use) says which flag in one line, and closes what it
opened: no folder, socket or thread is left."""

import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading

import pytest
import zmq

from engine.commands.arg_types import UsageError
from engine.config import CacheConfig
from engine.server import Engine
from engine_process import ROOT, in_process_config
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
    with pytest.raises(UsageError, match=f"--host 127.0.0.1 --port {busy_port}: .*address already in use"):
        await engine.run()
    assert list(temp_root.iterdir()) == []
    assert set(threading.enumerate()) <= threads  # the CURVE gate's thread stopped
    Engine(in_process_config(tmp_path)).close()  # the ZeroMQ addresses are free again


async def test_an_http_port_in_use_lets_go_of_the_cache_directory(tmp_path, temp_root, busy_port):
    """The prompt cache, built with the engine, was closed only by a drain: it kept its threads and the --cache-dir
    lock, and another engine in the process was refused the directory, 'in use by another engine'."""
    cache = CacheConfig(directory=str(tmp_path / "cache"))
    threads = set(threading.enumerate())
    engine = Engine(in_process_config(tmp_path, port=busy_port, cache=cache))
    with pytest.raises(UsageError, match=f"--port {busy_port}: .*address already in use"):
        await engine.run()
    assert set(threading.enumerate()) <= threads
    Engine(in_process_config(tmp_path, cache=cache)).close()


def test_a_client_port_in_use_lets_go_of_the_cache_directory(tmp_path, temp_root, busy_port):
    cache = CacheConfig(directory=str(tmp_path / "cache"))
    with pytest.raises(UsageError, match="--client-listen: Address already in use"):
        Engine(in_process_config(tmp_path, client_listen=(f"tcp://127.0.0.1:{busy_port}",), cache=cache))
    Engine(in_process_config(tmp_path, cache=cache)).close()


def test_a_worker_port_in_use_leaves_nothing_open(tmp_path, temp_root, busy_port):
    address = f"tcp://127.0.0.1:{busy_port}"
    with pytest.raises(UsageError, match=f"--worker-listen: Address already in use \\(addr='{address}'\\)"):
        Engine(in_process_config(tmp_path, worker_listen=(address,)))
    assert list(temp_root.iterdir()) == []
    Engine(in_process_config(tmp_path)).close()


@pytest.mark.parametrize("field", ["client_listen", "worker_listen"])
def test_an_address_in_use_leaves_no_socket_file_of_those_bound_before_it(tmp_path, temp_root, busy_port, field):
    """libzmq leaves an ipc:// socket's file as the socket closes: an engine refused its second address left the
    first one's path behind, a socket nobody listened on."""
    first = tmp_path / "first"
    flag = "--" + field.replace("_", "-")
    with pytest.raises(UsageError, match=f"{flag}: Address already in use"):
        Engine(in_process_config(tmp_path, **{field: (f"ipc://{first}", f"tcp://127.0.0.1:{busy_port}")}))
    assert not first.exists()
    assert list(temp_root.iterdir()) == []


def test_an_ipc_path_another_engine_listens_on_is_in_use_and_stays_its(tmp_path, temp_root):
    """libzmq deletes whatever is at an ipc:// path before it binds it: a second engine given a live one's
    --client-listen started without a word, took its new clients, and deleted the path as it stopped, the first
    engine serving on where nobody could reach it."""
    address = f"ipc://{tmp_path}/shared"
    context = zmq.Context()
    first = context.socket(zmq.ROUTER)  # the live engine's door
    first.bind(address)
    try:
        with pytest.raises(UsageError, match=f"--client-listen: Address already in use \\(addr='{address}'\\)"):
            Engine(in_process_config(tmp_path, client_listen=(address,))).close()  # closed if it was built
        assert list(temp_root.iterdir()) == []
        client = context.socket(zmq.DEALER)
        client.connect(address)
        client.send(b"still here")
        assert first.poll(10_000), "the first listener lost its path"
        assert first.recv_multipart()[1] == b"still here"
        client.close(linger=0)
    finally:
        first.close(linger=0)
        context.term()


def test_an_ipc_path_left_by_a_killed_engine_is_taken(tmp_path, temp_root):
    """An engine SIGKILLed leaves its socket file, which nothing listens on: the next one on the address binds it."""
    path = tmp_path / "workers-left"
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(path))
    left.close()  # closed without unlinking, as by a process that died
    Engine(in_process_config(tmp_path, worker_listen=(f"ipc://{path}",))).close()


def test_an_ipc_folder_that_cannot_be_made_is_a_usage_error_naming_the_flag(tmp_path, temp_root):
    """A folder this user may not make (ipc:///run/argus/clients without root) or a path under a file: the OSError
    ended `argus serve` in a traceback, exit 1."""
    under = tmp_path / "notes.txt"
    under.write_text("kept")
    address = f"ipc://{under}/clients"
    with pytest.raises(UsageError, match=f"--client-listen: cannot make the folder {under} of its socket: File exists"):
        Engine(in_process_config(tmp_path, client_listen=(address,)))
    assert list(temp_root.iterdir()) == []


def test_an_abstract_ipc_name_makes_no_folder_in_the_working_directory(tmp_path, temp_root, monkeypatch):
    """ipc://@NAME/clients names no file (Linux's abstract namespace): a folder @NAME was made in the working directory
    and left there; in one the engine could not write in (/ in a container), it could not start."""
    working = tmp_path / "working"
    working.mkdir()
    monkeypatch.chdir(working)
    name = f"argus-test-{secrets.token_hex(8)}"
    Engine(in_process_config(tmp_path, client_listen=(f"ipc://@{name}/clients",))).close()
    assert list(working.iterdir()) == []


def test_an_ipc_path_that_is_a_file_is_refused_not_deleted(tmp_path, temp_root):
    path = tmp_path / "notes.txt"
    path.write_text("kept")
    with pytest.raises(UsageError, match=f"--worker-listen: {path} is a file, not a socket: binding would delete it"):
        Engine(in_process_config(tmp_path, worker_listen=(f"ipc://{path}",))).close()  # closed if it was built
    assert path.read_text() == "kept"


@pytest.mark.parametrize(
    ("field", "address", "reason"),
    [
        ("worker_listen", "foo", "Invalid argument"),
        ("worker_listen", "tcp://127.0.0.1:abc", "Invalid argument"),
        ("client_listen", "tcp://no-such-interface:5555", "No such device"),
        ("client_listen", "udp://127.0.0.1:5555", "not compatible"),
    ],
)
def test_an_address_zeromq_cannot_listen_on_is_a_usage_error_naming_the_flag(
    tmp_path, temp_root, caplog, field, address, reason
):
    """Each ended `argus serve` in a ZMQError traceback (exit 1). And the error comes alone: it came after a
    warning that the address it could not listen on listened without CURVE."""
    flag = "--" + field.replace("_", "-")
    with pytest.raises(UsageError, match=f"{flag}: .*{reason}.*{re.escape(address)}"):
        Engine(in_process_config(tmp_path, **{field: (address,)}))
    assert list(temp_root.iterdir()) == []
    assert "listens without CURVE" not in caplog.text


@pytest.mark.parametrize("flag", ["--port", "--client-listen", "--worker-listen"])
def test_argus_serve_on_an_address_in_use_says_which_in_one_line_and_exits_2(busy_port, flag):
    """Each was a traceback, exit 1: a second engine started beside a first one, on the default ports."""
    ports = {"--port": "0", "--client-listen": "tcp://127.0.0.1:0", "--worker-listen": "tcp://127.0.0.1:0"}
    ports[flag] = str(busy_port) if flag == "--port" else f"tcp://127.0.0.1:{busy_port}"
    flags = [x for pair in ports.items() for x in pair]
    command = [sys.executable, "-m", "engine.cli", "serve", "--workers", "0", *flags]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("argus serve: error: ") and flag in last and "in use" in last.lower()
    assert "engine stopped" not in done.stderr  # it never started


def test_a_temporary_directory_too_long_for_the_ipc_socket_names_tmpdir(tmp_path, monkeypatch):
    root = tmp_path / ("t" * (110 - len(str(tmp_path))))  # argus-XXXXXXXX/workers within it cannot be bound
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    with pytest.raises(UsageError, match=f"the temporary directory {root} is too long a path .*: set TMPDIR to a"):
        Engine(in_process_config(tmp_path))
    assert list(root.iterdir()) == []
