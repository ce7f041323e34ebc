"""A real `argus serve` started by a benchmark on free loopback ports, waited for until its workers are ready."""

from __future__ import annotations

import json
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from engine.config import environment_for_children
from loadgen.bench.ports import LOOPBACK, free_port
from loadgen.bench.subprocesses import Child, http_get, python_module, spawn


@dataclass
class EngineChild:
    child: Child
    http: str
    client_address: str
    worker_address: str

    def ready(self) -> dict:
        status, body = http_get(self.http + "/ready")
        return json.loads(body)

    def wait_ready(self, workers: int, timeout_s: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.child.check_alive()
            try:
                status = self.ready()
                if len(status["workers"]) >= workers:
                    return status
            except (urllib.error.URLError, ConnectionError, OSError, json.JSONDecodeError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"engine not ready with {workers} workers:\n{self.child.log_tail()}")

    def stop(self) -> int:
        return self.child.stop(timeout_s=30.0)

    def stop_warning_on_failure(self) -> None:
        """Stops it after a measurement: an unclean exit is printed with the log's tail, not raised, as the
        figures measured before it still stand. Nor printed for one whose death ends the run (ChildDied): its
        exit and log were said by that, and the warning repeated them, the log's tail above the error line."""
        code = self.stop()
        if code != 0 and not self.child.death_said:
            print(f"warning: the engine exited with {code}:\n{self.child.log_tail()}")


def start_engine(
    log_dir: Path,
    *args: str,
    workers: int = 2,
    log_level: str = "WARNING",
    name: str | None = None,
    log_kept: bool = False,
) -> EngineChild:
    """`argus serve` on free loopback ports (HTTP, ZeroMQ clients, ZeroMQ workers), logging to `log_dir`/NAME.log
    (default: engine-HTTP_PORT); `log_kept`: `log_dir` outlives the command (see Child)."""
    http_port, client_port, worker_port = free_port(), free_port(), free_port()
    command = python_module(
        "engine.cli",
        "--log-level",
        log_level,
        "serve",
        "--host",
        LOOPBACK,
        "--port",
        str(http_port),
        "--client-listen",
        f"tcp://{LOOPBACK}:{client_port}",
        "--worker-listen",
        f"tcp://{LOOPBACK}:{worker_port}",
        "--workers",
        str(workers),
        *args,
    )
    # its own engine, asked without a key: one exported in the shell (for an engine of the user's) made it require
    # that key, and the benchmark's /ready was refused
    child = spawn(command, log_dir, name or f"engine-{http_port}", env=environment_for_children(), log_kept=log_kept)
    return EngineChild(
        child, f"http://{LOOPBACK}:{http_port}", f"tcp://{LOOPBACK}:{client_port}", f"tcp://{LOOPBACK}:{worker_port}"
    )
