"""One key pair given as a worker's or a client's own and as the engine's: refused as it starts, naming both files.
The engine's pair (engine.key_secret copied where worker-1's belongs) was refused by the engine at the handshake, its
words saying to admit the key, and admitted so, every worker host held the secret that lets it pose as the engine. The
worker's own (worker-1.key given as --curve-server-key) failed each handshake, said after a second and a half to be
a wrong engine key."""

import re

import pytest

from engine.cli import main
from engine.commands.arg_types import UsageError, client_keys
from protocols.curve import LOCAL_WORKER_KEYS_ENV, ClientKeys, KeyPair, create_key_files

_SAYS = (
    "are one key pair, given as this side's own and as the engine's: a worker or client needs a key pair of its own"
    " (argus keys) and the engine's public key, its NAME.key; the engine's secret key belongs on its host alone"
)


@pytest.mark.parametrize("name", ["engine", "worker-1"])
def test_one_key_pairs_files_are_refused_as_a_peers_own_and_the_engines(tmp_path, name):
    public, secret = create_key_files(tmp_path, name)
    with pytest.raises(UsageError) as refused:
        client_keys(str(secret), str(public))  # argus worker's --curve-key, argus loadgen's --curve-secret
    assert str(refused.value) == f"{secret} and {public} {_SAYS}"
    with pytest.raises(ValueError, match=re.escape(_SAYS)):
        ClientKeys.from_files(secret, public)  # engine.client's


def test_one_key_pair_in_the_workers_variable_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    keys = KeyPair.load(create_key_files(tmp_path, "engine")[1])
    monkeypatch.setenv(LOCAL_WORKER_KEYS_ENV, b" ".join((keys.public, keys.secret, keys.public)).decode())
    assert main(["worker", "--connect", "tcp://127.0.0.1:9", "--backend", "sim"]) == 2
    err = capsys.readouterr().err
    said = f"argus worker: error: ${LOCAL_WORKER_KEYS_ENV}: its first key and its third {_SAYS}"
    assert err.strip().splitlines()[-1] == said
    assert keys.secret.decode() not in err
