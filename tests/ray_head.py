"""A Ray head started by hand, as a user starts a cluster's (`ray start --head`), listening on loopback alone: for the
tests of an engine that joins a cluster (--ray-address), and for those whose engine needs a Ray cluster but not an
instance of its own, which then pay for one start in a module, not for an instance each."""

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from engine_process import free_port


def ensure_the_local_token() -> None:
    """Writes ~/.ray/auth_token, Ray's token of the local instances it starts, if it is not there yet: as the first
    local instance's start on a machine does (a fresh home has none, and a head told to use it does not start)."""
    subprocess.run([_ray_command(), "get-auth-token", "--generate"], stdout=subprocess.DEVNULL, check=True)


def _ray_command() -> str:
    return str(Path(sys.executable).with_name("ray"))


@contextlib.contextmanager
def loopback_ray_head(log_path: Path, *options: str, environment: dict[str, str]) -> Iterator[str]:
    """`ray start --head --node-ip-address=127.0.0.1 OPTIONS` with `environment` added to this process's, its output
    in `log_path`; its address (HOST:PORT) until it is stopped at the end."""
    port = free_port()
    environment = os.environ | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"} | environment
    command = [_ray_command(), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}"]
    # workers' ports from the OS: Ray's range (10002 to 19999) may hold the port drawn for the head
    command += ["--include-dashboard=false", "--min-worker-port=0", "--max-worker-port=0", *options]
    with open(log_path, "wb") as log:
        head = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text(errors="replace"):
            assert head.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        # its processes die with it (Ray starts them with PR_SET_PDEATHSIG)
        head.terminate()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
