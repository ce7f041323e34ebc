"""Starts a real `argus serve` (or a hand-started `argus worker`) in a subprocess for a test, and stops it with nothing
left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import zmq
from waiting import eventually

from engine.config import EngineConfig, LaunchConfig
from loadgen.bench.ports import free_port
from protocols.worker_messages import engine_side_codec, worker_side_codec

ROOT = Path(__file__).resolve().parents[1]
# how often wait_ready asks: most tests wait for an engine's start, each for half of this past it on average (at 0.2 s,
# 0.1 s of each of the suite's hundreds of starts); a /ready refused or answered costs the engine next to nothing
READY_POLL_S = 0.05


@dataclass
class EngineProcess:
    process: subprocess.Popen
    http: str
    client_address: str
    worker_address: str
    log_path: Path
    api_key: str | None = None

    def get(self, path: str) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            with urllib.request.urlopen(
                urllib.request.Request(self.http + path, headers=headers), timeout=10
            ) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def generate(self, body: dict) -> tuple[int, dict]:
        """POST /v1/images/generations: the status and the JSON answered, an error's too."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.http + "/v1/images/generations", json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return reply.status, json.load(reply)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def ready(self) -> dict:
        return json.loads(self.get("/ready")[1])

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample in /metrics (0 when absent)."""
        _, body = self.get("/metrics")
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in body.decode().splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            sample_name, _, sample_labels = sample.partition("{")
            got = ",".join(sorted(sample_labels.rstrip("}").split(","))) if sample_labels else ""
            if sample_name == name and got == wanted:
                return float(value)
        return 0.0

    def idle(self) -> bool:
        """No image admitted and unanswered (queued or running), and no worker still holding one: an image cut short
        is answered at once, and frees its worker when the abort reaches it."""
        return self.metric("argus_queued_images") == 0 and all(w["load"] == 0 for w in self.ready()["workers"])

    def wait_ready(self, workers: int, timeout_s: float = 180.0, restored: bool = True) -> dict:
        """/ready once it lists `workers` workers, and (`restored`) the saved cache is restored: requests made
        while it is read are served, but most as misses."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"engine exited with {self.process.returncode}:\n{self.log()}")
            try:
                status = self.ready()
                if len(status["workers"]) >= workers and not (restored and status["cache_restoring"]):
                    return status
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            time.sleep(READY_POLL_S)
        raise TimeoutError(f"engine not ready with {workers} workers:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def raw_client(context: zmq.Context, address: str, identity: bytes | None = None) -> zmq.Socket:
    """A bare DEALER connected to the engine, to send what engine.client would not; closed, it waits for nothing."""
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        client.setsockopt(zmq.IDENTITY, identity)
    client.connect(address)
    return client


def ask_worker_door(address: str, message: object, identity: bytes | None = None) -> object:
    """Sends `message` (a Hello, a Probe, or bytes sent as they are: one this version cannot encode) to an engine's
    worker `address` on a connection of its own, under `identity` if given, and returns the engine's answer."""
    context = zmq.Context()
    socket = raw_client(context, address, identity)
    try:
        socket.send_multipart([message] if isinstance(message, bytes) else engine_side_codec().encode(message))
        assert socket.poll(30_000), f"no answer to the {type(message).__name__}"
        return worker_side_codec().decode(socket.recv_multipart())
    finally:
        socket.close()
        context.term()


def slow_reading_client(context: zmq.Context, address: str) -> zmq.Socket:
    """A raw ZeroMQ client with the least room to take replies in: the engine's side of the link holds the rest."""
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.RCVHWM, 1)
    client.setsockopt(zmq.RCVBUF, 4096)
    client.connect(address)
    return client


def start_worker(connect: str, backend: str, *args: str, **popen: object) -> subprocess.Popen:
    """`argus worker --connect CONNECT --backend BACKEND ARGS`, as a user starts one by hand."""
    command = [sys.executable, "-m", "engine.cli", "worker", "--connect", connect, "--backend", backend, *args]
    return subprocess.Popen(command, cwd=ROOT, **popen)


def said_as_it_exits_2(worker: subprocess.Popen, timeout_s: float = 60) -> str:
    """What a worker started with stderr=PIPE said, once it has exited 2, as one it refuses to serve must; killed
    if it has not."""
    try:
        assert worker.wait(timeout=timeout_s) == 2
        said = worker.stderr.read()
        return said if isinstance(said, str) else said.decode()
    finally:
        if worker.poll() is None:
            worker.kill()


def start_lone_and_fleet(
    tmp_path: Path, connect: str, fleet: int, fleet_connect: str | None = None
) -> tuple[list[subprocess.Popen], dict[str, Path]]:
    """A lone sim worker dialling `connect` and a `--count fleet` one dialling `fleet_connect` (`connect` unless
    given), and where each logs (stderr): "lone", "fleet"."""
    logs = {"lone": tmp_path / "lone.log", "fleet": tmp_path / "fleet.log"}
    with open(logs["lone"], "wb") as lone_log, open(logs["fleet"], "wb") as fleet_log:
        workers = [
            start_worker(connect, "sim", "--time-scale", "0.01", stderr=lone_log),
            start_worker(
                fleet_connect or connect, "sim", "--count", str(fleet), "--time-scale", "0.01", stderr=fleet_log
            ),
        ]
    return workers, logs


@contextlib.contextmanager
def lone_and_fleet(
    tmp_path: Path, connect: str, fleet: int, fleet_connect: str | None = None
) -> Iterator[tuple[list[subprocess.Popen], dict[str, Path]]]:
    """start_lone_and_fleet's two, those still running on the way out killed."""
    workers, logs = start_lone_and_fleet(tmp_path, connect, fleet, fleet_connect)
    try:
        yield workers, logs
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def start_engine(
    tmp_path: Path,
    *args: str,
    workers: int = 2,
    backend: str = "tiny",
    wait: bool = True,
    api_key: str | None = None,
    worker_port: int | None = None,
    client_port: int | None = None,
    open_files: int | None = None,
    argus_options: tuple[str, ...] = (),
) -> EngineProcess:
    """`open_files`: the engine's limit on open files, soft and hard (a host's `ulimit -n`), set before it starts;
    `argus_options`: argus's own, before `serve` (--log-level, --log-format)."""
    port, client_port, worker_port = free_port(), client_port or free_port(), worker_port or free_port()
    log_path = tmp_path / f"engine-{port}.log"
    options = {
        "--port": str(port),
        "--client-listen": f"tcp://127.0.0.1:{client_port}",
        "--worker-listen": f"tcp://127.0.0.1:{worker_port}",
        "--workers": str(workers),
        "--backend": backend,
        **({"--api-key": api_key} if api_key else {}),
    }
    command = [sys.executable, "-m", "engine.cli", *argus_options, "serve"]
    command += [*(x for pair in options.items() for x in pair), *args]
    if open_files is not None:
        command = [sys.executable, "-c", _UNDER_OPEN_FILES_LIMIT, str(open_files), *command]
    with open(log_path, "wb") as log:
        # its own process group, so a failed test can kill the engine and its workers together
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    engine = EngineProcess(
        process,
        f"http://127.0.0.1:{port}",
        f"tcp://127.0.0.1:{client_port}",
        f"tcp://127.0.0.1:{worker_port}",
        log_path,
        api_key,
    )
    return ready_or_stopped(engine, workers) if wait else engine


def ready_or_stopped(engine: EngineProcess, workers: int) -> EngineProcess:
    """`engine`, once ready with `workers` workers; stopped if it never is."""
    try:
        engine.wait_ready(workers)
    except Exception:
        engine.stop()
        raise
    return engine


# a command run with its limit on open files (argv[1]) set, soft and hard, before it starts: in place before the engine
# reads it, with no window after its start
_UNDER_OPEN_FILES_LIMIT = (
    "import os, resource, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_NOFILE, (n, n));"
    " os.execv(sys.argv[2], sys.argv[2:])"
)


def has_loaded_numpy(pid: int) -> bool:
    """Whether the process has loaded numpy's C extension: an argus process doing so is inside the imports of its
    command line, a few hundred ms from their end."""
    try:
        return "_multiarray_umath" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


async def stop_in_process(engine, running: asyncio.Task, spawned=()) -> None:
    """Stops an engine run in this process (`running` is its engine.run()), then kills what is left of the worker
    processes the test recorded starting for it (None: a start the test refused)."""
    engine.request_stop()
    await asyncio.wait_for(running, 60)
    for process in spawned:
        if process is not None and process.returncode is None:
            process.kill()


def in_process_config(tmp_path: Path, **changes) -> EngineConfig:
    """For an Engine built in the test's own process: its ZeroMQ sockets on IPC under `tmp_path`, HTTP on any
    free port, no local workers."""
    endpoints = {"client_listen": (f"ipc://{tmp_path}/clients",), "worker_listen": (f"ipc://{tmp_path}/workers",)}
    return EngineConfig(**({"port": 0, "launch": LaunchConfig(count=0)} | endpoints | changes))


@contextlib.asynccontextmanager
async def ready_sim_engine(tmp_path: Path, **changes) -> AsyncIterator[tuple[object, int]]:
    """An Engine run in this process with one sim worker (images in a millisecond), ready: (engine, its HTTP port)."""
    # here, not at the top: most tests that import this module run the engine in a process of its own
    from engine.http.readiness import readiness
    from engine.server import Engine

    port = free_port()
    launch = LaunchConfig(count=1, backend="sim", time_scale=0.001)
    engine = Engine(in_process_config(tmp_path, port=port, launch=launch, **changes))
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: readiness(engine)["ready"], timeout_s=60)
        yield engine, port
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 30)


async def connect_when_listening(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    for _ in range(600):
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:  # the engine is still starting
            await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")
