"""CURVE: an engine that requires it serves workers and clients holding admitted keys, and no one else."""

import asyncio
import errno
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zmq.auth
from waiting import wait_for

from engine.cli import main
from engine.client import ArgusClient, AsyncArgusClient
from engine.commands.arg_types import UsageError, client_keys
from engine.server import Engine
from engine.zmq.curve_gate import CLIENTS, REFUSED_LOG_INTERVAL_S, CurveGate, _AllowedKeys
from engine_process import ROOT, in_process_config, start_engine
from protocols.client_messages import Images
from protocols.curve import (
    LOCAL_WORKER_KEYS_ENV,
    ClientKeys,
    KeyPair,
    RefusedHandshakes,
    create_key_files,
    load_public_key,
    load_public_keys,
)
from protocols.sockets import make_socket
from workers.config import WorkerConfig
from workers.main import load_backend
from workers.runtime import EngineRefused, WorkerRuntime


def argus_keys(directory, name):
    """The key pair `argus keys` writes (run in this process: a process of its own took half a second a pair)."""
    assert main(["keys", "--dir", str(directory), "--name", name]) == 0
    return directory / f"{name}.key", directory / f"{name}.key_secret"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    admitted = root / "admitted"
    engine_public, engine_secret = argus_keys(root, "engine")
    worker_public, worker_secret = argus_keys(admitted, "worker")
    client_public, client_secret = argus_keys(admitted, "client")
    _, stranger_secret = create_key_files(root / "strangers", "stranger")
    assert (engine_secret.stat().st_mode & 0o777) == 0o600
    return {
        "root": root,
        "admitted": admitted,
        "engine_public": engine_public,
        "engine_secret": engine_secret,
        "worker_secret": worker_secret,
        "client": ClientKeys.from_files(client_secret, engine_public),
        "stranger": ClientKeys.from_files(stranger_secret, engine_public),
    }


@pytest.fixture(scope="module")
def engine(tmp_path_factory, keys):
    # one local worker (admitted through its ephemeral key) and one started by hand with its key files, both at the
    # engine's time scale (at the sim's own, a request the remote worker took was 5 s)
    engine = start_engine(
        tmp_path_factory.mktemp("curve"),
        "--time-scale", "0.01",
        "--curve-secret", str(keys["engine_secret"]),
        "--curve-allow", str(keys["admitted"]),
        workers=1, backend="sim",
    )  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "worker", "--connect", engine.worker_address, "--backend", "sim",
         "--time-scale", "0.01", "--worker-id", "remote", "--curve-key", str(keys["worker_secret"]),
         "--curve-server-key", str(keys["engine_public"])],
        cwd=ROOT,
    )  # fmt: skip
    try:
        engine.wait_ready(2, timeout_s=60)
        yield engine
    finally:
        assert engine.stop() == 0
        worker.terminate()  # started by hand, it would wait for the next engine
        worker.wait(timeout=30)


def test_local_and_remote_workers_join_over_curve(engine):
    names = sorted(w["name"].split("/")[0] for w in engine.ready()["workers"])
    assert names == ["local-0", "remote"]


def test_an_engine_without_curve_keeps_its_workers_from_the_worker_keys_of_its_shell(tmp_path, keys, monkeypatch):
    """ARGUS_WORKER_CURVE, exported to start a worker by hand, reached the local workers of an engine started from the
    same shell without CURVE: each tried CURVE, heard that its engine has none, exited 2, and was given up."""
    monkeypatch.setenv(LOCAL_WORKER_KEYS_ENV, keys["client"].to_env())
    engine = start_engine(tmp_path, "--time-scale", "0.01", workers=1, backend="sim", wait=False)
    given_up = "cannot serve as configured"

    def joined_or_given_up() -> bool:
        if given_up in engine.log():
            return True
        try:
            return len(engine.ready()["workers"]) == 1
        except OSError:  # not listening yet
            return False

    try:
        assert wait_for(joined_or_given_up, timeout_s=120)
        assert given_up not in engine.log()
        assert [w["name"].split("/")[0] for w in engine.ready()["workers"]] == ["local-0"]
    finally:
        assert engine.stop() == 0


def test_admitted_client_is_served(engine, keys):
    with ArgusClient(engine.client_address, timeout_s=30, curve=keys["client"]) as client:
        assert isinstance(client.generate("over curve", width=64, height=64), Images)


# what a client sees: told at once why it is refused (it waited for its timeout, or for ever without one, as
# ZeroMQ does not try again; its requests sealed for another engine key, as ZeroMQ tries again for ever)
REFUSALS = {
    "stranger": "does not admit this CURVE key",
    "plaintext": "requires CURVE keys",
    "wrong-server-key": "the engine's public key given is not its own",
}


def test_others_get_nothing(engine, keys):
    """Each kind of refused client at once, in a thread of its own: each waits out its refusal and a second."""
    with ThreadPoolExecutor(len(REFUSALS)) as pool:
        for refused in [pool.submit(_gets_nothing, engine, keys, who) for who in REFUSALS]:
            refused.result()


def _gets_nothing(engine, keys, who: str) -> None:
    curve = {
        "stranger": keys["stranger"],
        "plaintext": None,
        "wrong-server-key": ClientKeys(keys["client"].own, KeyPair.generate().public),
    }[who]
    refused = REFUSALS[who]
    # without a timeout: a refused client waited for ever
    with ArgusClient(engine.client_address, timeout_s=None, curve=curve) as client:
        with pytest.raises(ConnectionRefusedError, match=refused) as raised:
            client.generate("let me in", width=64, height=64)
        assert f"the engine at {engine.client_address}" in str(raised.value)
        # and any later request: the refusal was told once, and the next call waited for ever
        with pytest.raises(ConnectionRefusedError, match=refused):
            client.generate("again", width=64, height=64)
        # refused for good, the client hears no more: unread, the events of libzmq dialling on (a wrong server key)
        # filled the monitor and stalled libzmq's I/O thread after about 5 minutes
        monitor = client._refusals.monitor
        while monitor.poll(0):  # what came before it stopped (and libzmq's word that it stopped)
            monitor.recv_multipart()
        time.sleep(1.0)
        assert not monitor.poll(0)

    async def ask_async():
        async with AsyncArgusClient(engine.client_address, curve=curve) as client:
            with pytest.raises(ConnectionRefusedError, match=refused):
                await asyncio.wait_for(client.generate("let me in", width=64, height=64), 30)
            with pytest.raises(ConnectionRefusedError):  # and any later request, at once
                await client.generate("again", width=64, height=64)

    asyncio.run(ask_async())
    # and the engine is unharmed
    with ArgusClient(engine.client_address, timeout_s=30, curve=keys["client"]) as client:
        assert isinstance(client.generate("still fine", width=64, height=64), Images)


def test_a_secret_key_is_never_readable_by_others_not_even_while_it_is_written(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)  # a folder others may read
    write = zmq.auth.create_certificates
    exposed = []

    def watched(directory, name):
        paths = write(directory, name)
        secret = Path(paths[1])
        # readable by others now: the file itself, or a folder they may enter
        exposed.append(bool(secret.stat().st_mode & 0o077) and bool(secret.parent.stat().st_mode & 0o077))
        return paths

    monkeypatch.setattr(zmq.auth, "create_certificates", watched)
    public, secret = create_key_files(shared, "engine")
    assert exposed == [False]
    assert (public.parent, secret.parent) == (shared, shared)
    assert (secret.stat().st_mode & 0o777) == 0o600
    assert KeyPair.load(secret).public == zmq.auth.load_certificate(public)[0]
    assert sorted(p.name for p in shared.iterdir()) == ["engine.key", "engine.key_secret"]


def test_a_public_key_argus_keys_writes_is_not_warned_of_whatever_the_umask(tmp_path, caplog):
    """Under a umask of 002 (a user's default on Debian and Ubuntu) the public key was group-writable, and the engine
    warned of it in the allow directory `argus keys` had written it to."""
    umask = os.umask(0o002)
    try:
        public, _ = create_key_files(tmp_path / "workers", "worker-1")
    finally:
        os.umask(umask)
    assert (public.stat().st_mode & 0o777) == 0o644
    with caplog.at_level(logging.WARNING, logger="argus.curve"):
        assert load_public_keys(tmp_path / "workers") == {load_public_key(public)}
    assert caplog.records == []


def test_argus_keys_refuses_to_replace_a_key_pair_unless_forced(tmp_path, capsys):
    assert main(["keys", "--dir", str(tmp_path), "--name", "engine"]) == 0
    first = (tmp_path / "engine.key").read_bytes()
    assert main(["keys", "--dir", str(tmp_path), "--name", "engine"]) == 2
    assert f"{tmp_path / 'engine.key'} exists: pass --force" in capsys.readouterr().err
    assert (tmp_path / "engine.key").read_bytes() == first
    # half a pair left behind is kept too
    (tmp_path / "engine.key").unlink()
    assert main(["keys", "--dir", str(tmp_path), "--name", "engine"]) == 2
    assert f"{tmp_path / 'engine.key_secret'} exists" in capsys.readouterr().err
    assert main(["keys", "--dir", str(tmp_path), "--name", "engine", "--force"]) == 0
    assert KeyPair.load(tmp_path / "engine.key_secret").public == zmq.auth.load_certificate(tmp_path / "engine.key")[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine.key", "engine.key_secret"]


@pytest.mark.parametrize("name", ["../evil", "sub/evil", ""])
def test_argus_keys_refuses_a_name_that_is_no_plain_file_name(tmp_path, name, capsys):
    """`--name ../evil` wrote the pair beside --dir, without a word."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "sub").mkdir()
    assert main(["keys", "--dir", str(tmp_path / "keys"), "--name", name]) == 2
    assert f"argus keys: error: --name {name!r}: give a plain file name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keys", "sub"]


def test_argus_keys_refuses_a_dir_it_cannot_write_in_in_one_line(tmp_path, capsys):
    """A --dir that is a file was said to be a key pair to --force over (which failed the same); one under a file, or
    a key file's name taken by a directory, ended in a traceback."""
    (tmp_path / "file").write_text("")
    assert main(["keys", "--dir", str(tmp_path / "file"), "--force"]) == 2
    assert f"argus keys: error: --dir {tmp_path / 'file'}: not a directory" in capsys.readouterr().err
    assert main(["keys", "--dir", str(tmp_path / "file" / "keys")]) == 2
    assert f"argus keys: error: {tmp_path / 'file' / 'keys'}: Not a directory" in capsys.readouterr().err
    (tmp_path / "keys" / "engine.key").mkdir(parents=True)
    assert main(["keys", "--dir", str(tmp_path / "keys"), "--force"]) == 2
    assert f"argus keys: error: {tmp_path / 'keys' / 'engine.key'}: Is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["engine.key"]  # its private folder removed


def test_a_mistyped_allowed_directory_is_refused(tmp_path):
    public, _ = create_key_files(tmp_path / "allowed", "worker")
    for mistyped in (tmp_path / "alowed", public):
        with pytest.raises(NotADirectoryError):
            load_public_keys(mistyped)
    assert load_public_keys(tmp_path / "allowed") == {zmq.auth.load_certificate(public)[0]}


def test_an_empty_allowed_directory_and_a_refused_key_are_logged(tmp_path, caplog):
    _, secret = create_key_files(tmp_path / "keys", "engine")
    (tmp_path / "allowed").mkdir()
    caplog.set_level(logging.WARNING, logger="argus.curve")
    with zmq.Context() as context:
        CurveGate(context, str(secret), str(tmp_path / "allowed"))  # its authenticator thread is not started
    assert "holds no public key (*.key): no remote worker or client can connect" in caplog.text
    caplog.clear()
    # a worker's secret key copied where its public key goes: said so, where the line read as an empty folder
    worker_public, _ = create_key_files(tmp_path / "allowed", "worker")
    worker_public.unlink()
    with zmq.Context() as context:
        CurveGate(context, str(secret), str(tmp_path / "allowed"))
    assert "holds no public key (*.key) (only secret keys, *.key_secret: put the peers' public NAME.key there)" in (
        caplog.text
    )
    caplog.clear()
    # what the authenticator asks at each CURVE handshake
    allowed = _AllowedKeys({"clients": {b"admitted"}})
    assert allowed.callback("clients", b"admitted") and not caplog.text
    assert not allowed.callback("clients", b"stranger")
    assert "refused a peer whose public key stranger is not admitted (clients socket)" in caplog.text
    assert not allowed.callback("workers", b"admitted")  # admitted on one socket is not admitted on the other
    assert (
        "public key admitted is not admitted on the workers socket: it is a client key (--curve-allow), admitted on"
        " the clients socket" in caplog.text
    )


def test_a_reload_counts_the_keys_of_the_directories(tmp_path, caplog):
    """The local workers' own key was counted with them: with the one key of workers/ removed, the reload said
    "1 admitted on the workers socket", and whoever revoked it looked for a key still there."""
    _, secret = create_key_files(tmp_path / "keys", "engine")
    create_key_files(tmp_path / "clients", "client-1")
    worker_public, _ = create_key_files(tmp_path / "workers", "worker-1")
    caplog.set_level(logging.INFO, logger="argus.curve")
    with zmq.Context() as context:
        gate = CurveGate(context, str(secret), str(tmp_path / "clients"), str(tmp_path / "workers"))
        worker_public.unlink()
        gate.reload()
    assert "1 admitted on the clients socket (0 added, 0 removed)" in caplog.text
    assert "0 admitted on the workers socket (0 added, 1 removed)" in caplog.text


def test_a_reload_of_a_directory_gone_says_so_once_and_changes_nothing(tmp_path):
    """Moved away before a SIGHUP, the directory was named twice: "DIR: DIR: not a directory of public keys"."""
    _, secret = create_key_files(tmp_path / "keys", "engine")
    client_public, _ = create_key_files(tmp_path / "clients", "client-1")
    with zmq.Context() as context:
        gate = CurveGate(context, str(secret), str(tmp_path / "clients"))
        (tmp_path / "clients").rename(tmp_path / "elsewhere")
        with pytest.raises(UsageError) as refused:
            gate.reload()
        assert str(refused.value) == f"{tmp_path / 'clients'}: not a directory of public keys"
        assert gate.admits(CLIENTS, load_public_keys(tmp_path / "elsewhere").pop())  # the keys until then hold


def test_clients_keys_cannot_join_as_workers_nor_workers_keys_ask_as_clients(tmp_path_factory, keys):
    """With --curve-allow-workers each socket admits its own keys: a client key that could join as a worker
    would be sent other users' prompts. The engine's log says a key refused on one socket is admitted on the other
    (it said the key was not admitted), and its peer is not told the key is in neither directory."""
    root = tmp_path_factory.mktemp("split")
    client_public, client_secret = argus_keys(root / "clients", "client")
    worker_public, worker_secret = argus_keys(root / "workers", "worker")
    client_keys = ClientKeys.from_files(client_secret, keys["engine_public"])
    worker_keys = ClientKeys.from_files(worker_secret, keys["engine_public"])
    engine = start_engine(
        root,
        "--time-scale", "0.01",
        "--curve-secret", str(keys["engine_secret"]),
        "--curve-allow", str(root / "clients"),
        "--curve-allow-workers", str(root / "workers"),
        workers=1, backend="sim",
    )  # fmt: skip
    remote = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "worker",
                "--connect",
                engine.worker_address,
                "--backend",
                "sim",
                "--time-scale",  # the engine's: at the sim's own, the request it might take was 5 s
                "0.01",
                "--worker-id",
                name,
                "--curve-key",
                str(secret),
                "--curve-server-key",
                str(keys["engine_public"]),
            ],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name, secret in (("with-worker-key", worker_secret), ("with-client-key", client_secret))
    ]
    try:
        engine.wait_ready(2, timeout_s=60)
        with ArgusClient(engine.client_address, timeout_s=30, curve=client_keys) as client:
            assert isinstance(client.generate("over curve", width=64, height=64), Images)
        with ArgusClient(engine.client_address, timeout_s=30, curve=worker_keys) as client:
            with pytest.raises(ConnectionRefusedError, match="does not admit this CURVE key on this socket"):
                client.generate("a worker's key asking", width=64, height=64)
        # the worker with a client's key had as long as the other to join
        names = sorted(w["name"].split("/")[0] for w in engine.ready()["workers"])
        assert names == ["local-0", "with-worker-key"]
        assert remote[1].wait(timeout=60) == 2
        refused = remote[1].stderr.read()
        assert (
            "does not admit this CURVE key on this socket (a worker's key goes in its --curve-allow-workers" in refused
        )
        assert "not in its --curve-allow or --curve-allow-workers" not in refused
        client_key, worker_key = (
            load_public_keys(path.parent).pop().decode() for path in (client_public, worker_public)
        )
        assert (
            f"refused a peer at 127.0.0.1 whose public key {client_key} is not admitted on the workers socket: it is a"
            " client key (--curve-allow), admitted on the clients socket" in engine.log_path.read_text()
        )
        assert (
            f"refused a peer at 127.0.0.1 whose public key {worker_key} is not admitted on the clients socket: it is a"
            " worker key (--curve-allow-workers), admitted on the workers socket" in engine.log_path.read_text()
        )
    finally:
        assert engine.stop() == 0
        for worker in remote:
            worker.terminate()
            worker.wait(timeout=30)


def _spoiled(directory, keys, how):
    """A key file spoiled `how`, beside the good ones: its path, and what the refusal says."""
    secret = keys["engine_secret"].read_text()
    stranger = KeyPair.generate()
    path = directory / f"{how}.key_secret"
    spoiled = {
        "missing": None,
        "empty": "",
        "truncated": secret[: secret.index("secret-key")],
        "short key": secret.replace(KeyPair.load(keys["engine_secret"]).secret.decode(), "abc"),
        "another pair's public key": secret.replace(
            KeyPair.load(keys["engine_secret"]).public.decode(), stranger.public.decode()
        ),
        # the whole line: a z85 key may hold an '=' of its own
        "a key line without =": re.sub(r'public-key = "[^"]*"', "public-key", secret, count=1),
    }[how]
    if spoiled is not None:
        path.write_text(spoiled)
    says = {
        "missing": "No such file or directory",
        "empty": "No public key found",
        "truncated": "holds no secret key",
        "short key": "its secret key is not a CURVE key (40 z85 characters)",
        "another pair's public key": "its public key is not the secret key's",
        "a key line without =": "a public-key or secret-key line without its '='",
    }[how]
    return path, says


@pytest.mark.parametrize(
    "how", ["missing", "empty", "truncated", "short key", "another pair's public key", "a key line without ="]
)
def test_a_key_file_that_cannot_be_used_is_refused_naming_it(tmp_path, keys, how, capsys):
    """Each was a traceback (exit 1); a key of the wrong length, ZeroMQ's "Invalid argument" naming no file; and a
    pair whose public key is not its secret's started an engine that its own workers could not join."""
    path, says = _spoiled(tmp_path, keys, how)
    with zmq.Context() as context:
        with pytest.raises(UsageError, match=re.escape(says)) as refused:
            CurveGate(context, str(path), str(keys["admitted"]))
    assert str(path) in str(refused.value)
    with pytest.raises(UsageError, match=re.escape(says)):
        client_keys(str(path), str(keys["engine_public"]))
    if how in ("missing", "empty", "short key", "a key line without ="):  # the others hold a good public key
        with pytest.raises(UsageError, match=re.escape(str(path))):
            client_keys(str(keys["worker_secret"]), str(path))
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "spoiled.key").write_text('public-key = "abc"\n')
    with zmq.Context() as context:
        with pytest.raises(UsageError, match=re.escape(f"{tmp_path / 'allowed' / 'spoiled.key'}: its public key")):
            CurveGate(context, str(keys["engine_secret"]), str(tmp_path / "allowed"))


def test_sighup_reads_the_allowed_keys_again_and_a_directory_it_cannot_read_changes_nothing(tmp_path, keys):
    """Keys were read once, at start: admitting a new client, or refusing one whose key leaked, meant a restart."""
    allowed = tmp_path / "allowed"
    old_public, old_secret = argus_keys(allowed, "old")
    new_public, new_secret = argus_keys(tmp_path / "pending", "new")
    old, new = (ClientKeys.from_files(secret, keys["engine_public"]) for secret in (old_secret, new_secret))
    engine = start_engine(
        tmp_path, "--time-scale", "0.01", "--curve-secret", str(keys["engine_secret"]), "--curve-allow", str(allowed),
        workers=1, backend="sim",
    )  # fmt: skip

    def hang_up(outcome: str) -> None:
        before = engine.log_path.read_text().count(outcome)
        engine.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: engine.log_path.read_text().count(outcome) > before), engine.log()

    def served(curve: ClientKeys) -> bool:  # a client of its own: ZeroMQ checks a key at the handshake only
        with ArgusClient(engine.client_address, timeout_s=30, curve=curve) as client:
            try:
                return isinstance(client.generate("who is in", width=64, height=64), Images)
            except ConnectionRefusedError:
                return False

    try:
        assert served(old) and not served(new)
        (allowed / "new.key").write_bytes(new_public.read_bytes())
        hang_up("CURVE keys reloaded")
        assert served(old) and served(new)
        old_public.unlink()
        (allowed / "spoiled.key").write_text('public-key = "abc"\n')
        hang_up("CURVE keys not reloaded")
        assert served(old) and served(new)  # the keys in force until then still hold
        (allowed / "spoiled.key").unlink()
        hang_up("CURVE keys reloaded")
        assert served(new) and not served(old)
        assert "spoiled.key: its public key is not a CURVE key" in engine.log()
    finally:
        assert engine.stop() == 0


def test_a_secret_key_given_where_a_public_one_belongs_is_refused(tmp_path, keys):
    """It was taken quietly: the engine's secret could sit on every client host as its --curve-server-key, or a
    client's secret in the engine's allow directory, and nobody be told."""
    says = re.escape(f"{keys['engine_secret']} holds a secret key: pass the public NAME.key")
    with pytest.raises(UsageError, match=says):
        client_keys(str(keys["worker_secret"]), str(keys["engine_secret"]))
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    renamed = allowed / "client.key"
    renamed.write_bytes(keys["engine_secret"].read_bytes())
    with zmq.Context() as context:
        with pytest.raises(UsageError, match=re.escape(f"{renamed} holds a secret key")):
            CurveGate(context, str(keys["engine_secret"]), str(allowed))


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_command_given_a_spoiled_key_file_says_so_in_one_line_and_exits_2(tmp_path, keys, command):
    path, says = _spoiled(tmp_path, keys, "short key")
    flags = {
        "serve": ["--workers", "0", "--port", "0", "--client-listen", "tcp://127.0.0.1:0", "--worker-listen",
                  "tcp://127.0.0.1:0", "--curve-secret", str(path), "--curve-allow", str(keys["admitted"])],
        "worker": ["--connect", "tcp://127.0.0.1:9", "--backend", "sim", "--curve-key", str(path),
                   "--curve-server-key", str(keys["engine_public"])],
    }[command]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", command, *flags], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"argus {command}: error: {path}: {says}"
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "value, says",
    [
        ("one", " is not three CURVE keys"),
        ("a b c", " is not three CURVE keys"),
        ("{worker} {worker_secret} {engine} {engine}", " is not three CURVE keys"),
        ("{engine} {worker_secret} {engine}", ": its first key is not the public key of its second, the secret"),
    ],
)
def test_worker_keys_set_by_hand_that_cannot_be_used_are_said_in_one_line(keys, value, says, monkeypatch, capsys):
    """ARGUS_WORKER_CURVE set by hand (docs/scaling.md gives its form) that was not three keys ended in a traceback;
    three of the wrong length in a socket option's "Invalid argument"; a public key not the secret's, in every
    handshake failing, said to be the engine key's fault. Run in this process, where a traceback is raised."""
    worker = KeyPair.load(keys["worker_secret"])
    engine = load_public_key(keys["engine_public"])
    value = value.format(worker=worker.public.decode(), worker_secret=worker.secret.decode(), engine=engine.decode())
    monkeypatch.setenv(LOCAL_WORKER_KEYS_ENV, value)
    assert main(["worker", "--connect", "tcp://127.0.0.1:9", "--backend", "sim"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"argus worker: error: ${LOCAL_WORKER_KEYS_ENV}{says}"), err
    assert "Traceback" not in err and worker.secret.decode() not in err


@pytest.fixture
def libzmq_without_curve(monkeypatch):
    """This process's libzmq as one built without CURVE answers: zmq.has says so, and checking a key pair, or making
    one, is ENOTSUP ("Operation not supported"), which pyzmq raises as a ZMQError."""
    has = zmq.has

    def not_supported(*_secret):
        raise zmq.ZMQError(errno.ENOTSUP)

    monkeypatch.setattr(zmq, "has", lambda capability: capability != "curve" and has(capability))
    monkeypatch.setattr(zmq, "curve_public", not_supported)
    monkeypatch.setattr(zmq, "curve_keypair", not_supported)


@pytest.mark.parametrize("given", ["environment", "files"])
def test_worker_keys_on_a_libzmq_without_curve_are_refused_in_one_line(
    keys, libzmq_without_curve, given, monkeypatch, capsys
):
    """They were a traceback of zmq's "Operation not supported", naming neither the keys nor CURVE."""
    flags = ["worker", "--connect", "tcp://127.0.0.1:9", "--backend", "sim"]
    if given == "environment":
        monkeypatch.setenv(LOCAL_WORKER_KEYS_ENV, keys["client"].to_env())
        named = f"${LOCAL_WORKER_KEYS_ENV}"
    else:
        flags += ["--curve-key", str(keys["worker_secret"]), "--curve-server-key", str(keys["engine_public"])]
        named = str(keys["worker_secret"])
    assert main(flags) == 2
    err = capsys.readouterr().err
    says = f"argus worker: error: {named}: this libzmq ({zmq.zmq_version()}) is built without CURVE"
    assert err.strip().splitlines()[-1].startswith(says), err
    assert "Traceback" not in err and keys["client"].own.secret.decode() not in err


def test_argus_keys_on_a_libzmq_without_curve_is_refused_in_one_line(tmp_path, libzmq_without_curve, capsys):
    """It was a traceback of zmq's "Operation not supported" (and left --dir made, empty)."""
    directory = tmp_path / "keys"
    assert main(["keys", "--dir", str(directory), "--name", "engine"]) == 2
    err = capsys.readouterr().err
    says = f"argus keys: error: CURVE keys cannot be made: this libzmq ({zmq.zmq_version()}) is built without CURVE"
    assert err.strip().splitlines()[-1].startswith(says), err
    assert "Traceback" not in err and not directory.exists()


def test_the_ray_launchers_keys_on_a_libzmq_without_curve_are_refused_in_one_line(tmp_path, libzmq_without_curve):
    """The engine makes a key pair for its Ray actors to dial in with: that was a traceback of zmq's "Operation not
    supported" as the engine started."""
    says = "--launcher ray (its actors dial in over CURVE): CURVE keys cannot be made: this libzmq"
    with pytest.raises(UsageError, match=re.escape(says)):
        Engine(in_process_config(tmp_path, launcher="ray"))
    with pytest.raises(ValueError, match="CURVE keys cannot be made: this libzmq"):  # the local workers' pair
        KeyPair.generate()


def test_refused_handshakes_are_logged_once_per_socket_per_interval(caplog):
    """Each refused handshake was a line: a peer holding the engine's public key made thousands a second, with a
    fresh key each."""
    now = [0.0]
    allowed = _AllowedKeys({"clients": {b"admitted"}, "workers": set()}, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="argus.curve")
    for i in range(1000):
        assert not allowed.callback("clients", f"stranger-{i}".encode())
    assert not allowed.callback("workers", b"stranger-w")  # the other socket has its own line
    assert allowed.callback("clients", b"admitted")
    assert [r.getMessage() for r in caplog.records] == [
        "CURVE: refused a peer whose public key stranger-0 is not admitted (clients socket)",
        "CURVE: refused a peer whose public key stranger-w is not admitted (workers socket)",
    ]
    caplog.clear()
    now[0] = REFUSED_LOG_INTERVAL_S
    assert not allowed.callback("clients", b"stranger-last")
    assert [r.getMessage() for r in caplog.records] == [
        "CURVE: refused a peer whose public key stranger-last is not admitted (clients socket);"
        " 999 more refused since the last such line"
    ]


def test_a_secret_key_file_others_may_read_is_warned_of(tmp_path, caplog):
    """It was taken without a word: whoever reads it can pose as the engine, or as an admitted worker."""
    _, secret = create_key_files(tmp_path, "engine")
    caplog.set_level(logging.WARNING, logger="argus.curve")
    KeyPair.load(secret)
    assert not caplog.text
    secret.chmod(0o644)
    KeyPair.load(secret)
    assert f"{secret} is readable by other users (mode 0644)" in caplog.text


def test_an_allow_directory_others_may_write_to_is_warned_of(tmp_path, caplog):
    """Whoever can write there admits any key at the next start or SIGHUP: it was taken without a word."""
    allowed = tmp_path / "allowed"
    allowed.mkdir(mode=0o700)
    create_key_files(allowed, "worker")
    caplog.set_level(logging.WARNING, logger="argus.curve")
    assert len(load_public_keys(allowed)) == 1
    assert not caplog.text
    allowed.chmod(0o777)
    assert len(load_public_keys(allowed)) == 1
    assert f"{allowed} is writable by other users (mode 0777)" in caplog.text


def test_a_secret_key_file_others_may_write_to_is_warned_of_as_such(tmp_path, caplog):
    """One others may write to and not read was said to be readable: whoever writes it puts in a pair they know."""
    _, secret = create_key_files(tmp_path, "engine")
    caplog.set_level(logging.WARNING, logger="argus.curve")
    secret.chmod(0o620)
    KeyPair.load(secret)
    assert f"{secret} is writable by other users (mode 0620): " in caplog.text
    caplog.clear()
    secret.chmod(0o666)
    KeyPair.load(secret)
    assert f"{secret} is readable and writable by other users (mode 0666): " in caplog.text


def test_a_key_file_others_may_write_to_in_an_allow_directory_is_warned_of(tmp_path, caplog):
    """Whoever can write it puts their own public key in its place, admitted at the next start or SIGHUP: it was
    taken without a word in a directory they could not write to."""
    allowed = tmp_path / "allowed"
    allowed.mkdir(mode=0o755)
    public, _ = create_key_files(allowed, "worker")
    caplog.set_level(logging.WARNING, logger="argus.curve")
    public.chmod(0o644)
    assert len(load_public_keys(allowed)) == 1
    assert not caplog.text  # readable by all: it is a public key
    public.chmod(0o666)
    assert len(load_public_keys(allowed)) == 1
    assert f"{public} is writable by other users (mode 0666): whoever writes a key there is admitted" in caplog.text


def test_a_refusal_before_the_watch_would_have_started_is_still_heard(monkeypatch):
    """Clients and workers connected first and started hearing refusals next: a handshake refused in between (the
    process descheduled on a busy host) went unheard, and they waited for ever. Here that moment is stretched."""
    hear = RefusedHandshakes.__init__

    def late(self, *args, **kwargs):
        time.sleep(0.5)  # a plaintext handshake with a CURVE engine on loopback is refused well within this
        hear(self, *args, **kwargs)

    monkeypatch.setattr(RefusedHandshakes, "__init__", late)
    says = "requires CURVE keys"
    with zmq.Context() as context:
        engine = make_socket(context, zmq.ROUTER, curve_server=KeyPair.generate(), zap_domain="clients")
        address = f"tcp://127.0.0.1:{engine.bind_to_random_port('tcp://127.0.0.1')}"
        with ArgusClient(address, timeout_s=10) as client:
            with pytest.raises(ConnectionRefusedError, match=says):
                client.generate("let me in", width=64, height=64)

        async def ask_async():
            async with AsyncArgusClient(address) as client:
                with pytest.raises(ConnectionRefusedError, match=says):
                    await asyncio.wait_for(client.generate("let me in", width=64, height=64), 10)

        asyncio.run(ask_async())
        worker = WorkerRuntime(load_backend(WorkerConfig(address, "w", backend="sim", time_scale=0)), address, "w")
        refused: list[EngineRefused] = []
        serving = threading.Thread(target=lambda: refused.extend(_raised(worker.serve, EngineRefused)))
        serving.start()
        serving.join(timeout=30)
        if serving.is_alive():
            worker.stop()
            serving.join(timeout=30)
        # either as the mechanism's mismatch, or as handshakes failing without a word when the engine hangs up first
        [error] = refused
        assert f"the engine at {address}" in str(error) and says in str(error)
        engine.close(linger=0)


# ZeroMQ's greeting (ZMTP 3.0) as an engine requiring CURVE sends it: signature, version, mechanism, as-server, filler
_CURVE_GREETING = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"CURVE".ljust(20, b"\x00") + bytes(32)


def test_a_refusal_between_the_poll_that_saw_room_and_the_send_is_heard(monkeypatch):
    """The blocking client polled for room to send, then sent blocking: a handshake refused in between dropped the
    connection's queue, its only one, and the send waited for ever, deaf to the refusal (CI, under load). Here the
    moment between the two is stretched until the queue is gone, against a listener that greets as a CURVE engine
    and never hangs up (a real engine may hang up first, and the client then dials again, keeping its queue)."""
    wait = ArgusClient._wait

    def late(self, events, deadline):
        ready = wait(self, events, deadline)
        if events == zmq.POLLOUT:
            polled.set()  # the refusal comes after the poll, not before it
            assert wait_for(lambda: not self._socket.getsockopt(zmq.EVENTS) & zmq.POLLOUT), "the queue stayed"
        return ready

    polled = threading.Event()
    monkeypatch.setattr(ArgusClient, "_wait", late)
    # the client polls for room only once it has heard a handshake succeed: here it heard one of a connection since
    # gone (events not read yet, the only way the race comes now), and the next handshake is refused
    monkeypatch.setattr(RefusedHandshakes, "connected", property(lambda self: True))
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def greet():
            connection, _ = listener.accept()
            accepted.append(connection)
            polled.wait(30)
            connection.sendall(_CURVE_GREETING)

        accepted: list[socket.socket] = []
        threading.Thread(target=greet, daemon=True).start()
        address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        outcome: list[Exception] = []

        def call():
            with ArgusClient(address, timeout_s=10) as client:
                outcome.extend(_raised(lambda: client.generate("let me in", width=64, height=64), Exception))

        calling = threading.Thread(target=call, daemon=True)  # a daemon: the old send never returned
        calling.start()
        calling.join(timeout=30)
        for connection in accepted:
            connection.close()
    assert not calling.is_alive(), "the send waited for ever"
    [error] = outcome
    assert isinstance(error, ConnectionRefusedError) and "requires CURVE keys" in str(error), error


def _raised(call, kind: type[Exception]) -> list[Exception]:
    try:
        call()
    except kind as error:
        return [error]
    return []


@pytest.mark.parametrize("refused_first", [False, True], ids=["closed", "refused, then closed"])
def test_refused_handshakes_closed_twice_before_their_socket_is_harmless(refused_first):
    """Each close() drains the monitor before it stops it: a second one polled the monitor the first had closed, and
    raised ZMQError (Operation not supported), where it was harmless."""
    context = zmq.Context()
    sock = make_socket(context, zmq.DEALER)
    sock.connect("tcp://127.0.0.1:9")  # dialled in vain: the monitor has events to drain
    handshakes = RefusedHandshakes(sock, "tcp://127.0.0.1:9", curve_on=False)
    try:
        if refused_first:
            handshakes._stop_monitoring()  # as reason() does once it heard a refusal
        handshakes.close()
        handshakes.close()
        assert handshakes.monitor.closed and handshakes.reason() is None
    finally:
        sock.close(linger=0)
        context.term()
