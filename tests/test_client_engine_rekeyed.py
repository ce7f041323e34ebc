"""A client that reached its engine, which then came back on the address with another CURVE key pair, or with CURVE on
where the client has none, fails every handshake without a word. A sync call timed out with a plain TimeoutError that
said nothing of them: it now says what the handshakes suggest, as it does before an engine was reached."""

import pytest

from engine.client import ArgusClient
from engine_process import start_engine
from protocols.client_messages import Images
from protocols.curve import ClientKeys, create_key_files

_SIM = ("--time-scale", "0.01")
# the call after the restart waits it out in full. The handshakes fail from the moment the second engine binds, while
# it starts (the client dials on every 100 ms), so they have failed before that call begins; it bounds too the call
# before, served in about 0.1 s on two cores kept busy
_TIMEOUT_S = 2.0


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _curve(root, name: str) -> tuple[str, ...]:
    _, secret = create_key_files(root, name)
    return ("--curve-secret", str(secret), "--curve-allow", str(root / "clients"))


@pytest.fixture(params=["new-key-pair", "curve-on-at-engine-only"])
def rekeyed(request, tmp_path):
    """(address, client keys, what the failures suggest, a function that stops the first engine and starts the
    second on its address)."""
    root = tmp_path / "keys"
    client_public, client_secret = create_key_files(root / "clients", "client")
    if request.param == "new-key-pair":
        before = _curve(root, "engine")
        keys = ClientKeys.from_files(client_secret, root / "engine.key")
        after = _curve(root / "new", "engine")
        (root / "new" / "clients").symlink_to(root / "clients")
        suggests = "the engine's public key given is not its own"
    else:
        before, keys, after, suggests = (), None, _curve(root, "engine"), "requires CURVE keys"
    engines = [start_engine(tmp_path, *_SIM, *before, backend="sim", workers=1)]

    def restart() -> None:
        assert engines[0].stop() == 0
        port = _port(engines[0].client_address)
        engines.append(start_engine(tmp_path, *after, backend="sim", workers=0, client_port=port))

    try:
        yield engines[0].client_address, keys, suggests, restart
    finally:
        for engine in engines:
            engine.stop()


def test_a_sync_call_timed_out_says_what_the_handshakes_suggest(rekeyed):
    address, keys, suggests, restart = rekeyed
    with ArgusClient(address, timeout_s=_TIMEOUT_S, curve=keys) as client:
        assert isinstance(client.generate("before", width=64, height=64), Images)
        restart()
        # the engine's own words (a refusal at once) may come first when CURVE is on at its end only: the same words
        with pytest.raises((TimeoutError, ConnectionRefusedError), match=suggests):
            client.generate("after", width=64, height=64)
