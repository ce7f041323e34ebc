"""argus started with standard input, output or error closed (`<&-`, `>&-`, `2>&-`) runs as with them on /dev/null:
libuv aborted on closing the event loop's descriptor that took the free 0, 1 or 2 (every local worker died of SIGABRT
in its spawn, the engine never served and aborted at its stop; loadgen aborted at its first closed connection)."""

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from waiting import wait_for

from engine_process import ROOT, free_port


def closing(streams: str, *command: str) -> list[str]:
    """`command` run through a shell that closes `streams` (its redirections, e.g. "<&- >&-") as it execs it."""
    return ["/bin/sh", "-c", f'exec "$@" {streams}', "sh", *command]


def ready(http: str) -> bool:
    try:
        with urllib.request.urlopen(http + "/ready", timeout=5) as response:
            return json.loads(response.read())["ready"]
    except (urllib.error.URLError, ConnectionError):
        return False


def test_an_engine_with_its_input_and_output_closed_serves_and_stops(tmp_path: Path) -> None:
    port = free_port()
    command = [
        *(sys.executable, "-m", "engine", "serve", "--backend", "sim", "--time-scale", "0.01", "--workers", "1"),
        *("--port", str(port), "--client-listen", f"tcp://127.0.0.1:{free_port()}"),
        *("--worker-listen", f"tcp://127.0.0.1:{free_port()}"),
    ]
    log_path = tmp_path / "engine.log"
    with open(log_path, "wb") as log:
        engine = subprocess.Popen(closing("<&- >&-", *command), cwd=ROOT, stderr=log, start_new_session=True)
    try:
        gave_up = lambda: engine.poll() is not None or "SIGABRT" in log_path.read_text()  # noqa: E731
        assert wait_for(lambda: ready(f"http://127.0.0.1:{port}") or gave_up(), 60)
        assert not gave_up(), log_path.read_text()
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(60) == 0, log_path.read_text()
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    said = log_path.read_text()
    assert "SIGABRT" not in said and "Traceback" not in said, said


def test_loadgen_with_its_error_stream_closed_ends_as_it_would() -> None:
    command = [sys.executable, "-m", "engine", "loadgen", "--rate", "1", "--duration-s", "1"]
    command += ["--url", f"http://127.0.0.1:{free_port()}"]
    ended = subprocess.run(closing("2>&- <&-", *command), cwd=ROOT, stdout=subprocess.DEVNULL, timeout=60)
    assert ended.returncode == 2  # nothing answers at --url; it aborted (-6, 134 through a shell)
