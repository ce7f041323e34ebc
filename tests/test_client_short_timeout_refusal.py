"""A sync call that times out while the engine's handshakes fail without a word (a wrong engine public key, CURVE at
one end only), before there were enough of them to refuse it (about a second and a half), says what they suggest. It
said `nothing answered at ADDRESS ...: check that the engine is up`, sending whoever read it to an engine that was up,
refusing the call's keys."""

import pytest

from engine.client import ArgusClient, EngineUnreachable
from engine_process import start_engine
from protocols.curve import ClientKeys, KeyPair, create_key_files

# under the ten silent failures (a dial every 100 ms at least) that would refuse the call: it times out first
_SHORT_TIMEOUT_S = 0.6


@pytest.fixture(scope="module")
def curve_engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    engine_public, engine_secret = create_key_files(root, "engine")
    client_public, client_secret = create_key_files(root / "clients", "client")
    engine = start_engine(
        tmp_path_factory.mktemp("engine"),
        "--curve-secret", str(engine_secret),
        "--curve-allow", str(root / "clients"),
        workers=0, backend="sim",
    )  # fmt: skip
    try:
        yield engine, ClientKeys.from_files(client_secret, engine_public)
    finally:
        assert engine.stop() == 0


@pytest.mark.parametrize("keys", ["wrong-engine-key", "none"])
def test_a_call_timed_out_on_failing_handshakes_says_what_they_suggest(curve_engine, keys):
    engine, admitted = curve_engine
    curve = ClientKeys(admitted.own, KeyPair.generate().public) if keys == "wrong-engine-key" else None
    suggests = "the engine's public key given is not its own" if curve else "requires CURVE keys"
    with ArgusClient(engine.client_address, timeout_s=_SHORT_TIMEOUT_S, curve=curve) as client:
        # without keys, the engine's words (a refusal at once) may come first: the same suggestion
        with pytest.raises((EngineUnreachable, ConnectionRefusedError), match=suggests) as raised:
            client.generate("let me in", width=64, height=64)
    assert "nothing answered" not in str(raised.value)
