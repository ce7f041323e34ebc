"""What the benchmarks share: free ports, subprocesses started and stopped cleanly, medians,
plain tables, JSON output, and the bare baseline servers the engine is measured against.

The baseline servers run as their own processes (so they never share the load
client's CPU), started as `python -m loadgen.bench.harness zmq-echo|http-echo ...`.
Nothing heavy is imported at module level: `argus` imports the bench modules at
every start.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
_LOWEST_PORT = 10000  # above the ports services are given by convention
# sim workers that answer at once; a bench's workers started apart from the engine (`argus worker`) take it too, or
# the engine warns that it plans with another
INSTANT_SIM_TIME_SCALE = "0"
# `argus serve` flags for measuring the engine alone: such workers, a queue that never refuses
INSTANT_SIM_ENGINE = ("--backend", "sim", "--time-scale", INSTANT_SIM_TIME_SCALE, "--max-queue", str(1 << 20))


def sim_image_side(text: str) -> int:
    """An argparse type: an image side the sim backend takes. The engine answers any other with invalid_size: the
    engine bench failed with a traceback once its engine was up, the scale bench blamed the engine's speed."""
    from engine.arg_types import positive_int
    from workers.limits import BACKEND_SIZES

    side, sizes = positive_int(text), BACKEND_SIZES["sim"]
    if not sizes.takes(side):
        raise argparse.ArgumentTypeError(f"expected {sizes.rule}, not {text!r}")
    return side


def sim_image_size(text: str) -> tuple[int, int]:
    """An argparse type: WIDTHxHEIGHT with sides the sim backend takes, or auto (0, 0: its default). The compare bench
    ran a whole trace against each policy with any other, every request refused invalid_size, and exited 0."""
    from protocols.openai_images import parse_size
    from workers.limits import BACKEND_SIZES

    sizes = BACKEND_SIZES["sim"]
    try:
        width, height = parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or WIDTHxHEIGHT (1024x1024), not {text!r}") from None
    if width and not (sizes.takes(width) and sizes.takes(height)):
        raise argparse.ArgumentTypeError(f"expected sides that are {sizes.rule}, not {text!r}")
    return width, height


def _ports_below_ephemeral() -> range:
    try:
        ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_start = 32768  # Linux's default
    return range(_LOWEST_PORT, max(ephemeral_start, _LOWEST_PORT + 1024))


_PORTS = _ports_below_ephemeral()
# inherited by the processes this one starts (a bench run by a test), so they draw from the same share
PORT_SHARE_ENV = "ARGUS_PORT_SHARE"


def draw_ports_from_share(index: int, shares: int) -> None:
    """This process, and those it starts, draw their ports from the index-th of `shares` equal parts of the range,
    going round within it: processes started together (the test suite's parallel workers) never hand out the same
    port, where each one's random start could fall just behind another's."""
    _take_share(index, shares)
    os.environ[PORT_SHARE_ENV] = f"{index}/{shares}"


def _take_share(index: int, shares: int) -> None:
    global _share, _draws
    size = len(_PORTS) // shares if shares > 0 else 0
    if not 0 <= index < shares or size == 0:
        raise ValueError(f"no share {index} of {shares} in ports {_PORTS.start} to {_PORTS.stop - 1}")
    _share = _PORTS[index * size : (index + 1) * size]
    # each call takes the next port, so one process never hands out a port twice while its last holder may still
    # use it (a count: one draw at a time, from any thread)
    _draws = itertools.count(random.randrange(len(_share)))


# the share its starter drew from, or the whole range
_take_share(*map(int, os.environ.get(PORT_SHARE_ENV, "0/1").split("/")))


def free_port() -> int:
    """A loopback port free now, for an engine this process starts. It is drawn below the kernel's ephemeral range,
    not by binding port 0: the kernel hands the port bind(0) gave to the next outgoing connection too, and one
    such connection took an engine's port before the engine bound it (CI, 2026-12-03)."""
    for _ in _share:
        port = _share[next(_draws) % len(_share)]
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port on {LOOPBACK} from {_share.start} to {_share.stop - 1}")


# -- subprocesses ----------------------------------------------------------------
@dataclass
class Child:
    """A subprocess in its own process group, logging to a file."""

    process: subprocess.Popen
    log_path: Path
    name: str

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, then SIGKILL to its whole group (its own children too) if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever of the group is left
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        return self.process.returncode


def unwind_on_sigterm() -> None:
    """A SIGTERM (a timeout, a cancelled job) unwinds the benchmark as an error does, through the code that stops
    its children: they run in sessions of their own (out of a Ctrl-C's reach), and would outlive it."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def spawn(
    command: Sequence[str],
    log_dir: Path,
    name: str,
    env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> Child:
    log_path = Path(log_dir) / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(command),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            pass_fds=pass_fds,
        )
    return Child(process, log_path, name)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_http(child: Child, url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            http_get(url, timeout_s=2.0)
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"{child.name} did not answer {url}:\n{child.log_tail()}")


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
        figures measured before it still stand."""
        code = self.stop()
        if code != 0:
            print(f"warning: the engine exited with {code}:\n{self.child.log_tail()}")


def start_engine(
    log_dir: Path, *args: str, workers: int = 2, log_level: str = "WARNING", name: str | None = None
) -> EngineChild:
    """`argus serve` on free loopback ports (HTTP, ZeroMQ clients, ZeroMQ workers), logging to `log_dir`/NAME.log
    (default: engine-HTTP_PORT)."""
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
    child = spawn(command, log_dir, name or f"engine-{http_port}")
    return EngineChild(
        child, f"http://{LOOPBACK}:{http_port}", f"tcp://{LOOPBACK}:{client_port}", f"tcp://{LOOPBACK}:{worker_port}"
    )


def process_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process, utime + stime of every thread it ever ran, ended ones too
    (/proc/PID/stat fields 14 and 15; summing the live threads would miss a thread pool's that ended); 0 if
    the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds every core of this machine has spent busy since boot (/proc/stat: all but idle and iowait; guest
    time is already in user); NaN where there is no /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is pid (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def read_command(pid: int) -> str:
    """A process's command line, its arguments separated by NUL ("" once it has ended)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().decode(errors="replace")
    except OSError:  # it ended meanwhile
        return ""


def local_workers_of(engine_pid: int) -> list[int]:
    """The engine's local workers among its children; it also starts its MILP process (engine/milp_process.py)."""
    return [child for child in children_of(engine_pid) if "\0worker\0" in read_command(child)]


def milp_processes_of(engine_pid: int) -> list[int]:
    """The process the engine solves its allocation MILP in (one, once the first plan is asked for; none before)."""
    return [child for child in children_of(engine_pid) if "engine.milp_process" in read_command(child)]


# -- numbers and output ------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


# below this many samples a nearest-rank p99 is the largest of them: the tail is not resolved, and a report says so
P99_MIN_SAMPLES = 100


def p99_caveat(samples: int) -> str:
    """What a p99 over `samples` values is, when it is not a tail figure: "" from P99_MIN_SAMPLES on."""
    return "" if samples >= P99_MIN_SAMPLES else f"p99 of {samples} samples is their max"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain text, columns aligned (numbers right, text left)."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) if rows else False for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def cell(value: Any) -> str:
    """A figure as a table prints it."""
    if value is None:  # a figure with nothing to take it over (a p99 of no images): printed 'None', as Python says it
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def write_json(path: str | None, data: dict) -> None:
    """A figure that could not be measured (NaN, infinite) is written null: JSON has no such numbers, and strict
    readers (jq, JavaScript) refuse a file that holds Python's NaN."""
    if not path:
        return
    with open(path, "w") as f:
        json.dump(_finite_or_null(data), f, indent=2, allow_nan=False)
        f.write("\n")
    print(f"JSON written to {path}")


def _finite_or_null(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value


# -- baseline servers (run as subprocesses) ----------------------------------------
def _zmq_echo(args: argparse.Namespace) -> int:
    """A bare pyzmq ROUTER: decode the client's Generate, answer Images of the engine's reply size.

    The codec work (strict decode, encode) is the least any server speaking this
    protocol does; everything the engine does beyond it is what is measured.
    """
    import zmq

    from protocols.client_messages import ImageResult, Images, engine_side_codec
    from protocols.codec import Blob
    from protocols.sockets import make_socket

    context = zmq.Context()
    sock = make_socket(context, zmq.ROUTER)
    sock.bind(args.bind)
    codec = engine_side_codec()
    image = Blob(b"\x00" * args.image_bytes)
    worker = args.worker_name
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    try:
        while True:
            frames = sock.recv_multipart(copy=False)
            request = codec.decode(frames[1:])
            reply = Images(
                request.request_id,
                [
                    ImageResult(
                        image=image,
                        seed=12345,
                        level=0,
                        similarity=None,
                        queue_ms=0.1,
                        run_ms=0.1,
                        steps_run=50,
                        worker=worker,
                    )
                ],
            )
            sock.send_multipart([frames[0], *codec.encode(reply)], copy=False)
    finally:
        sock.close(linger=0)
        context.term()


def _http_echo(args: argparse.Namespace) -> int:
    """A bare aiohttp server: read and parse the JSON body, answer the engine's JSON body, both with the JSON
    library the engine uses (msgspec; the standard library's would make the baseline slower, the ratio higher)."""
    import msgspec
    import uvloop
    from aiohttp import web

    with open(args.template, "rb") as f:
        template = msgspec.json.decode(f.read())

    async def generate(request: web.Request) -> web.Response:
        body = msgspec.json.decode(await request.read())
        if not isinstance(body, dict) or "prompt" not in body:
            return web.json_response({"error": "no prompt"}, status=400)
        return web.Response(body=msgspec.json.encode(template), content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    app = web.Application()
    app.router.add_post("/v1/images/generations", generate)
    app.router.add_get("/health", health)
    web.run_app(app, host=LOOPBACK, port=args.port, access_log=None, print=None, loop=uvloop.new_event_loop())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadgen.bench.harness", description="baseline servers")
    sub = parser.add_subparsers(dest="server", required=True)
    z = sub.add_parser("zmq-echo")
    z.add_argument("--bind", required=True)
    z.add_argument("--image-bytes", type=int, required=True)
    z.add_argument("--worker-name", default="local-0/00000000")
    z.set_defaults(func=_zmq_echo)
    h = sub.add_parser("http-echo")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--template", required=True, help="JSON file: the response body")
    h.set_defaults(func=_http_echo)
    args = parser.parse_args(argv)
    if args.server == "zmq-echo" and not args.bind.startswith(f"tcp://{LOOPBACK}:"):
        parser.error("the baseline binds loopback only")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
