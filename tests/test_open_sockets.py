"""The engine warns at start about a ZeroMQ socket that listens beyond loopback without CURVE: any peer that
reaches it is admitted (on the worker socket, it is sent users' prompts); and about HTTP there without an API key."""

import pytest

from engine.arg_types import UsageError
from engine.server import Engine
from engine_process import free_port, in_process_config
from protocols.curve import create_key_files

# a TEST-NET-3 address (RFC 5737): not this host's, so the bind that follows the warning fails and nothing is
# opened beyond loopback (the engine refuses to start, naming the flag)
ELSEWHERE = "tcp://203.0.113.7:5556"


@pytest.mark.parametrize(
    ("socket", "warning"),
    [
        ("worker_listen", "join as a worker and be sent users' prompts"),
        ("client_listen", "send requests"),
    ],
)
def test_a_socket_beyond_loopback_without_curve_is_warned_about(tmp_path, caplog, socket, warning):
    with pytest.raises(UsageError, match="Cannot assign requested address"):
        Engine(in_process_config(tmp_path, **{socket: (ELSEWHERE,)}))
    assert f"{ELSEWHERE} listens without CURVE: any peer that reaches it can {warning}" in caplog.text


@pytest.mark.parametrize(
    ("host", "api_key", "warned"), [("0.0.0.0", None, True), ("0.0.0.0", "k", False), ("::1", None, False)]
)
def test_http_beyond_loopback_without_an_api_key_is_warned_about(tmp_path, caplog, host, api_key, warned):
    Engine(in_process_config(tmp_path, host=host, api_key=api_key)).close()  # HTTP binds in run(): nothing opened
    assert ("listens without an API key: any client that reaches it can generate images" in caplog.text) == warned


def test_curve_or_loopback_is_not_warned_about(tmp_path, caplog):
    keys = tmp_path / "keys"
    _, secret = create_key_files(keys, "engine")
    with pytest.raises(UsageError, match="Cannot assign requested address"):
        Engine(
            in_process_config(
                tmp_path, worker_listen=(ELSEWHERE,), curve_secret_file=str(secret), curve_allowed_dir=str(keys)
            )
        )
    loopback = in_process_config(
        tmp_path,
        client_listen=(f"tcp://127.0.0.1:{free_port()}",),
        worker_listen=(f"tcp://localhost:{free_port()}",),
    )
    Engine(loopback).close()
    assert "without CURVE" not in caplog.text
