"""What a worker waiting for an engine's answer warns (workers/runtime.py warn_unanswered): after its engine said
Shutdown, that it waits for the next one and no key is to blame; given a host that does not resolve, that host."""

import logging

from workers.runtime import unresolved_host, warn_unanswered


def test_a_wait_after_the_engine_said_shutdown_blames_no_key(caplog):
    with caplog.at_level(logging.WARNING, logger="argus"):
        warn_unanswered("tcp://127.0.0.1:5556", 20.0, engine_stopped=True)
    assert "the engine at tcp://127.0.0.1:5556 stopped 20 s ago (it said so)" in caplog.text
    assert "CURVE" not in caplog.text


def test_a_host_name_no_resolver_can_encode_is_named_as_not_resolving():
    """A label longer than DNS allows (63 bytes) fails IDNA encoding before any lookup: a UnicodeError."""
    host = "engine-" + "x" * 70 + ".example"
    assert unresolved_host(f"tcp://{host}:5556") == host
    assert unresolved_host("tcp://127.0.0.1:5556") is None
