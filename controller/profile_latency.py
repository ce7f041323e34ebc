"""`argus profile latency`: seconds per batch by level K and batch size, measured on a running backend.

One real worker process (`argus worker --backend tiny|sdxl|sim`) is started and
driven over a ROUTER socket the way the engine drives it (Hello -> Welcome,
then Generate batches, each answered by one BatchDone of ItemDones). A K=0 run supplies
the latents the level-K runs resume from. Every (level, batch) cell is run
`--repeats` times, the cells in a fresh random order each round so drift in the
machine's load falls on all of them alike, and the median is kept. The result
is a versioned `LatencyProfile` JSON whose provenance says how it was made.

Unlike the rest of controller/, this is a tool, not policy: it spawns a
process, opens a socket and reads the clock.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import logging
import os
import platform
import random
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from controller.profiles import LatencyProfile
from engine.commands.arg_types import (
    UsageError,
    batch_size,
    between,
    comma_separated,
    non_negative_float,
    non_negative_int,
    none_empty,
    output_file,
    positive_int,
    sim_time_scale,
    thread_count,
    torch_device,
)
from engine.commands.help_format import BACKEND_HELP, MEASURED_BACKEND_HELP
from engine.commands.worker import check_worker_backend
from engine.config import DEFAULT_LOCAL_WORKERS
from engine.logs.plurals import counted
from engine.system.whole_files import written_or_exit
from protocols.limits import MAX_BATCH, MAX_SEED
from workers.cannot_serve import ReasonPipe
from workers.config import runs_on_cpu_threads, threads_each

if TYPE_CHECKING:
    from protocols.worker_messages import Hello

log = logging.getLogger("argus.profile")
# distinct prompts (cycled past eight), so a batch is what the engine sends: one image per request
PROMPTS = (
    "a lighthouse on a cliff at dusk, highly detailed oil painting",
    "a red fox in a snowy forest, golden hour photograph",
    "a futuristic city street at night, neon lights, cinematic",
    "a bowl of ramen on a wooden table, studio lighting",
    "a portrait of an old sailor, charcoal drawing",
    "a castle on a mountain above the clouds, concept art",
    "a cat sleeping on a windowsill in the rain, watercolour",
    "a desert caravan under a starry sky, digital art",
)
HEARTBEAT_S = 1.0  # the engine's default
# the driver may sit idle between batches (scoring images, say): the worker must not give up on it
ENGINE_TIMEOUT_S = 3600.0
BATCH_TIMEOUT_S = 900.0
CLOCKS = ("wall", "cpu")


# -- the worker process, shared with `argus profile quality` ---------------------------
def add_worker_arguments(parser: argparse.ArgumentParser, *, simulated: bool = True) -> None:
    """`simulated` False: for what only a model measures (quality), so no sim backend and no time scale for it."""
    backends, backend_help = (
        (["tiny", "sdxl", "sim"], BACKEND_HELP) if simulated else (["tiny", "sdxl"], MEASURED_BACKEND_HELP)
    )
    # a sim worker runs on no device and no CPU threads: said only where the sim backend is offered
    no_device, threads_not_for = ("; none for sim", "sim, nor a GPU") if simulated else ("", "a GPU")
    parser.add_argument("--backend", default="tiny", choices=backends, help=backend_help)
    parser.add_argument("--device", type=torch_device, help=f"cpu or cuda:N (default cpu{no_device})")
    parser.add_argument("--model", help="local diffusers SD-XL directory (sdxl backend)")
    parser.add_argument(
        "--threads",
        type=thread_count,
        help="torch threads for a model on the CPU (default: half the CPUs this process may run on, at most"
        f" $OMP_NUM_THREADS, what `argus serve` gives each of its 2 default workers); not for {threads_not_for}",
    )
    if simulated:
        parser.add_argument(
            "--time-scale",
            type=sim_time_scale,
            help="sim backend: multiply simulated GPU time (default 1; above 0). The profile records it: a sim engine"
            " at another --time-scale plans with it scaled to its own",
        )
    else:  # none to give, as if left unset
        parser.set_defaults(time_scale=None)
    parser.add_argument("--steps", type=positive_int, default=50, help="denoising steps N (default 50)")
    parser.add_argument("--size", type=positive_int, help="image side in pixels (default: the backend's default size)")
    # past 2**64 msgpack cannot encode it: a traceback once the model was built
    parser.add_argument(
        "--seed", type=between(int, 0, MAX_SEED, "", "as the engine takes"), default=7, help="seeds the images"
    )
    parser.add_argument("--guidance", type=non_negative_float, default=5.0, help="guidance scale")


def worker_threads(args: argparse.Namespace) -> int | None:
    """The worker's --threads: for a model on the CPU, as given or what each of `argus serve`'s 2 default workers
    gets; None for the others, which refuse it (check_worker_backend refuses one given them)."""
    if not runs_on_cpu_threads(args.backend, args.device):
        return None
    return args.threads or threads_each(DEFAULT_LOCAL_WORKERS)


def worker_command(args: argparse.Namespace, connect: str, max_batch: int) -> list[str]:
    # --die-with-parent: the profiler owns it, as an engine owns its workers (its Shutdown ends it)
    command = [sys.executable, "-m", "engine.cli", "--log-level", "WARNING", "worker", "--connect", connect]
    command += ["--die-with-parent"]
    command += ["--backend", args.backend, "--worker-id", "profile", "--max-batch", str(max_batch)]
    # each as given: checked before, as the worker checks them (check_worker_backend)
    for flag, value in (
        ("--device", args.device),
        ("--time-scale", args.time_scale),
        ("--threads", worker_threads(args)),
    ):
        if value is not None:
            command += [flag, str(value)]
    if args.model:
        command.append(f"--model={args.model}")  # in one: argparse took a folder named -m for a flag
    return command


class WorkerProcess:
    """One `argus worker` subprocess and the ROUTER socket it connects to, as the engine has them."""

    def __init__(self, args: argparse.Namespace, max_batch: int, log_dir: Path):
        import zmq

        from loadgen.bench.ports import LOOPBACK
        from loadgen.bench.subprocesses import spawn
        from protocols.sockets import make_socket
        from protocols.worker_messages import engine_side_codec

        self._context = zmq.Context()
        self._socket = make_socket(self._context, zmq.ROUTER)
        self._codec = engine_side_codec()
        self._identity = b""
        self._said_as = f"its {args.backend} worker"  # should it die: with its pid, to find in the kernel's log
        self._batch_ids = iter(range(1, 1 << 30))
        self.heartbeats = 0
        # why the worker cannot serve (a model that does not load), said as the profile's own error
        self._refusal = ReasonPipe()
        try:
            port = self._socket.bind_to_random_port(f"tcp://{LOOPBACK}")
            command = worker_command(args, f"tcp://{LOOPBACK}:{port}", max_batch)
            environment = {**os.environ, **self._refusal.environment}
            self.child = spawn(command, log_dir, "worker", environment, pass_fds=(self._refusal.fd,))
        except BaseException:
            # no worker to stop: __exit__ will not run, and the socket, its context and the pipe stayed open
            self._close_sockets()
            raise
        self._refusal.started()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def handshake(self, timeout_s: float = 600.0) -> Hello:
        """Waits for the worker's Hello (it loads its model first) and welcomes it; returns the Hello."""
        from protocols.worker_messages import PROTOCOL_VERSION, Hello, Welcome

        hello = self._receive(Hello, time.monotonic() + timeout_s)
        self._send(Welcome(PROTOCOL_VERSION, HEARTBEAT_S, ENGINE_TIMEOUT_S, level=0))
        return hello

    def generate(self, level: int, steps: int, size: int, guidance: float, items: list) -> tuple[float, list]:
        """One batch of GenerateItems: (seconds from Generate sent to its BatchDone received, the ItemDones)."""
        from protocols.worker_messages import BatchDone, Generate, ItemCancelled, ItemFailed

        batch_id = next(self._batch_ids)
        started = time.perf_counter()
        self._send(Generate(batch_id, level, steps, size, size, guidance, "png", items))
        deadline = time.monotonic() + BATCH_TIMEOUT_S
        answer = self._receive(BatchDone, deadline)
        seconds = time.perf_counter() - started
        for outcome in answer.outcomes:
            if isinstance(outcome, ItemFailed):
                raise RuntimeError(f"worker failed {outcome.request_id}: {outcome.code}: {outcome.message}")
            if isinstance(outcome, ItemCancelled):
                raise RuntimeError(f"worker cancelled {outcome.request_id}")
        done = {outcome.request_id: outcome for outcome in answer.outcomes}
        results = [done[item.request_id] for item in items]
        for result in results:
            if result.level != level or result.steps_run != steps - level:
                raise RuntimeError(f"worker ran {result.steps_run} steps at level {result.level}; asked level {level}")
        return seconds, results

    def cpu_seconds(self) -> float:
        """CPU seconds the worker process has used so far, all its threads together."""
        from engine.system.proc_reads import process_cpu_s

        return process_cpu_s(self.child.process.pid)

    def close(self) -> None:
        import zmq

        from protocols.worker_messages import Shutdown

        try:
            if self._identity and self.child.alive():
                # stopped below whether it hears this or not: a refused send (the worker alive, its connection not the
                # ROUTER's, as after a rejoin under load) would be raised over the error that ended the run
                with contextlib.suppress(zmq.ZMQError):
                    self._socket.send_multipart([self._identity, *self._codec.encode(Shutdown())], copy=False)
        finally:
            self.child.stop(timeout_s=10.0)
            self._close_sockets()

    def _close_sockets(self) -> None:
        self._refusal.close()
        self._socket.close(linger=0)
        self._context.term()

    def _receive(self, kind: type, deadline: float):
        from protocols.worker_messages import Heartbeat, Hello

        while (left := deadline - time.monotonic()) > 0:
            if not self._socket.poll(int(min(left, 1.0) * 1000)):
                if not self.child.alive() and (refusal := self._refusal.reason()):
                    raise UsageError(refusal)
                self.child.check_alive(self._said_as)
                continue
            identity, *frames = self._socket.recv_multipart()
            self._identity = identity
            message = self._codec.decode(frames)
            if isinstance(message, kind):
                return message
            if isinstance(message, Heartbeat):
                self.heartbeats += 1
                continue
            if isinstance(message, Hello):
                continue  # a hello repeated while our welcome was on its way
            raise RuntimeError(f"unexpected {type(message).__name__} from the worker: {message}")
        raise TimeoutError(f"no {kind.__name__} from the worker:\n{self.child.log_tail()}")

    def _send(self, message: object) -> None:
        import zmq

        try:
            self._socket.send_multipart([self._identity, *self._codec.encode(message)], copy=False)
        except zmq.ZMQError:
            # the ROUTER cannot reach a worker that exited (mandatory routing): said as its exit, with its log, where
            # `argus bench worker` ended in zmq's "Host unreachable"
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.child.process.wait(1.0)
            self.child.check_alive(self._said_as)
            raise


# --levels of `argus profile latency`: level 0, the exact image, is measured without asking, and may be named too
levels_list = comma_separated(non_negative_int)


def cache_levels(asked: list[int] | None, hello: Hello, steps: int) -> list[int]:
    """Levels K > 0 asked for (default: every one the worker returns latents for below N), checked against it."""
    cached = [k for k in hello.levels if k < steps]
    levels = sorted(set(asked) - {0}) if asked else cached
    wrong = [k for k in levels if k not in cached]
    if wrong:
        raise UsageError(f"levels {wrong}: the worker returns latents below N={steps} only at {cached}")
    return levels


def warn_if_unservable(levels: list[int], steps: int) -> None:
    """Said before measuring (minutes, for a model): argus serve refuses a --latency-profile without every level it
    serves (the cache's, --levels), and the profile was found wanting only once made."""
    from workers.limits import DEFAULT_LEVELS

    if missing := sorted(set(DEFAULT_LEVELS) - set(levels)):
        # not that serve will not take it: `serve --levels 5,10` takes a profile of levels 5 and 10 (said so, one
        # measured so for an engine serving those was said to be refused)
        cached = [k for k in levels if k]
        served_with = f"--levels {','.join(map(str, cached))}" if cached else "--no-cache"
        log.warning(
            "this profile will have no latencies for levels %s (N=%d, levels %s): argus serve --latency-profile"
            " takes it only with %s; for its default levels, measure with --steps above %d and no --levels",
            missing,
            steps,
            levels,
            served_with,
            DEFAULT_LEVELS[-1],
        )


def image_size(args: argparse.Namespace, hello: Hello) -> int:
    """The side of the images to profile (--size, else the worker's default), checked with --steps against what the
    worker said it takes: sent as they were, a size or step count it refuses failed the first batch with a
    RuntimeError traceback after the model had loaded."""
    from workers.limits import SizeLimits, steps_refusal

    limits = SizeLimits.of(hello)
    size = args.size or limits.default_size
    if not limits.takes(size):
        raise UsageError(f"--size {size}: this {hello.backend} worker takes {limits.rule}")
    if refusal := steps_refusal(args.steps, hello.refused_steps):
        raise UsageError(f"--steps: {refusal}")
    return size


def machine_description(hello: Hello, args: argparse.Namespace) -> str:
    if hello.simulated:
        backend = f"backend {hello.backend}, SIMULATED (time scale {hello.time_scale:g}), no torch"
    else:
        torch = importlib.metadata.version("torch")
        threads = worker_threads(args)
        on_cpu = f" ({threads} torch thread{'' if threads == 1 else 's'})" if threads else ""
        backend = f"backend {hello.backend} on {hello.device}{on_cpu}, torch {torch}"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{backend}; host {socket.gethostname()} ({_cpu_model()}, {os.cpu_count()} cores,"
        f" load average {load} at the start)"
    )


def now_utc() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- the command -------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_worker_arguments(parser)
    parser.add_argument(
        "--levels",
        type=levels_list,
        help="levels K, comma separated; 0 is always measured (default: 0 and every level the worker caches below N,"
        " 0,5,10,15,20,25 at N=50)",
    )
    parser.add_argument(
        "--batches",
        # the largest is the worker's --max-batch: one it refuses ended the profile in a traceback of its usage
        type=comma_separated(batch_size),
        default="1,2,4",
        help=f"batch sizes, comma separated, 1 among them, at most {MAX_BATCH} (default 1,2,4)",
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=5, help="measurements of each (level, batch) (default 5)"
    )
    parser.add_argument(
        "--clock",
        choices=CLOCKS,
        default="wall",
        help="wall: seconds from Generate sent to its BatchDone received (default); cpu: CPU seconds the"
        " worker process used, for a CPU backend on a shared machine (leaves out waiting for a core), with --threads 1",
    )
    parser.add_argument("--name", help="the profile's name (default BACKEND_DEVICE, e.g. tiny_cpu, sdxl_cuda0)")
    parser.add_argument("--out", required=True, type=output_file, help="where to write the latency profile (JSON)")


def run(args: argparse.Namespace) -> int:
    from loadgen.bench.subprocesses import unwind_on_sigterm

    # a SIGTERM (a timeout, a cancelled job) unwinds as Ctrl-C does: it ended the process where it stood and left
    # its temporary folder behind
    unwind_on_sigterm()
    batches = sorted(set(args.batches))
    if not batches or batches[0] != 1:
        raise UsageError(f"--batches must include 1 (a profile covers batch 1 up): {batches}")
    # "" (--model "$MODEL" unset) was read as no --model: the tiny backend measured, a profile written of it
    none_empty(args, "--model")
    # what the worker would refuse as it starts: it exited saying so, and the profile ended in a traceback
    check_worker_backend(args.backend, args.model, args.device, args.time_scale, args.threads)
    if args.time_scale == 0:
        raise UsageError("--time-scale 0 simulates no GPU time: the profile would time the messaging alone")
    if args.clock == "cpu" and (threads := worker_threads(args) or 1) > 1:
        # threads that run at once each count their CPU seconds (and OpenMP's count those they spin waiting for each
        # other): on cores of their own a batch takes about 1/threads of the sum, and the engine planned with up to
        # that many times its latency. With 2 threads on a loaded 2-core host: 8.9 CPU s an image, 0.59 with 1
        given = "--threads" if args.threads else "--threads (by default half the CPUs)"
        raise UsageError(
            f"--clock cpu adds up the CPU seconds of the worker's {threads} torch threads ({given}), which run at"
            " once: not what a batch takes. Give --threads 1 with it (what each worker of `argus serve` gets with"
            " as many --workers as CPUs), or --clock wall"
        )
    with tempfile.TemporaryDirectory(prefix="argus-profile-latency-") as tmp:
        with WorkerProcess(args, batches[-1], Path(tmp)) as worker:
            hello = worker.handshake()
            levels = [0, *cache_levels(args.levels, hello, args.steps)]
            warn_if_unservable(levels, args.steps)
            if args.clock == "cpu" and (hello.simulated or hello.device != "cpu"):
                raise UsageError("--clock cpu counts the worker's CPU time: only for a tiny or sdxl backend on cpu")
            described = f"measured from {now_utc()} by `{shlex.join(sys.argv)}`; {machine_description(hello, args)}"
            size = image_size(args, hello)
            measured = _measure(worker, args, levels, batches, size)
    profile = _profile(args, hello, levels, batches, size, measured, described)
    # the measurements (minutes to hours of them) printed first, in case the file cannot be written
    _print(profile, batches, args.clock)
    written_or_exit("argus profile latency", "latency profile", args.out, lambda: profile.save(args.out))
    print(f"latency profile written to {args.out}")
    return 0


def _measure(
    worker: WorkerProcess, args: argparse.Namespace, levels: list[int], batches: list[int], size: int
) -> dict[str, dict[tuple[int, int], list[float]]]:
    """Seconds per batch by clock ("wall", "cpu") and cell (level, batch), one value a repeat."""
    from protocols.worker_messages import GenerateItem

    def items(level: int, batch: int, latents: list[dict] | None = None) -> list[GenerateItem]:
        # only the sim backend reads the similarity (for its quality model); it changes no timing
        return [
            GenerateItem(
                f"{level}-{batch}-{i}", PROMPTS[i % len(PROMPTS)], args.seed, latents[i][level] if level else None, 1.0
            )
            for i in range(batch)
        ]

    print(f"warming up the {args.backend} worker ({size}x{size}, N={args.steps}) ...", flush=True)
    _, full = worker.generate(0, args.steps, size, args.guidance, items(0, batches[-1]))
    latents = [result.by_level() for result in full]

    def run_cell(level: int, batch: int) -> tuple[float, float]:
        cpu = worker.cpu_seconds()
        wall, _ = worker.generate(level, args.steps, size, args.guidance, items(level, batch, latents))
        return wall, worker.cpu_seconds() - cpu

    # first runs of each shape and code path (text-to-image, resume) are slow: run them once unmeasured
    for batch in batches:
        run_cell(0, batch)
        run_cell(levels[-1], batch)

    cells = [(k, b) for k in levels for b in batches]
    seconds: dict[str, dict[tuple[int, int], list[float]]] = {clock: {cell: [] for cell in cells} for clock in CLOCKS}
    print(f"measuring {counted(args.repeats, 'round')} of {counted(len(cells), 'batch', 'batches')} ...", flush=True)
    for round_number in range(args.repeats):
        order = list(cells)
        random.Random(round_number).shuffle(order)
        for cell in order:
            for clock, value in zip(CLOCKS, run_cell(*cell), strict=True):
                seconds[clock][cell].append(value)
    return seconds


def _profile(
    args: argparse.Namespace,
    hello: Hello,
    levels: list[int],
    batches: list[int],
    size: int,
    measured: dict[str, dict[tuple[int, int], list[float]]],
    described: str,
) -> LatencyProfile:
    from loadgen.stats import median

    medians = {clock: {cell: median(values) for cell, values in cells.items()} for clock, cells in measured.items()}
    table: dict[int, tuple[float, ...]] = {}
    raised = 0
    for level in levels:
        known = {b: medians[args.clock][(level, b)] for b in batches}
        row: list[float] = []
        for batch in range(1, batches[-1] + 1):
            value = known[batch] if batch in known else _interpolate(known, batch)
            # a median may dip below the smaller batch's on a noisy machine; a profile never falls with batch
            if row and value < row[-1]:
                value, raised = row[-1], raised + 1
            row.append(round(value, 6))
        table[level] = tuple(row)
    filled = [b for b in range(1, batches[-1] + 1) if b not in batches]
    notes = [
        described,
        f"{size}x{size}, N={args.steps}, guidance {args.guidance}, one prompt per image",
        _CLOCK_NOTES[args.clock],
        f"median of {args.repeats} repeats per cell, cells shuffled each round, after an unmeasured warm-up",
    ]
    if args.clock == "cpu":
        ratios = [medians["wall"][cell] / medians["cpu"][cell] for cell in medians["cpu"]]
        notes.append(
            f"wall-clock medians of the same runs (Generate sent to BatchDone received, under the load above)"
            f" were {min(ratios):.2f}x to {max(ratios):.2f}x these (median {median(ratios):.2f}x)"
        )
    if filled:
        notes.append(f"batch sizes {filled} not measured: interpolated linearly between their measured neighbours")
    if raised:
        notes.append(
            f"{counted(raised, 'cell')} raised to the smaller batch's value so latency does not fall with batch size"
        )
    # tiny_cpu, sdxl_cuda0; a sim worker's device is "sim": plain "sim"
    name = args.name or "_".join(dict.fromkeys([hello.backend, hello.device.replace(":", "")]))
    return LatencyProfile(
        name, args.steps, table, "; ".join(notes) + ".", time_scale=hello.time_scale, model=hello.model
    )


_CLOCK_NOTES = {
    "wall": "seconds per batch from Generate sent to its BatchDone received (denoising, VAE decode, PNG encoding"
    " and the ZeroMQ round trip) through a real worker process",
    "cpu": "CPU seconds the worker process used per batch (all its threads: denoising, VAE decode, PNG encoding,"
    " messaging) through a real worker process: unlike the wall clock they leave out the time spent waiting for a"
    " core, though other load still slows the core itself (a busy sibling hyperthread, shared caches)",
}


def _interpolate(known: dict[int, float], batch: int) -> float:
    below = max(b for b in known if b < batch)
    above = min(b for b in known if b > batch)
    share = (batch - below) / (above - below)
    return known[below] + share * (known[above] - known[below])


def _print(profile: LatencyProfile, batches: list[int], clock: str) -> None:
    from loadgen.bench.output import table

    headers = ["K", *(f"b={b}{'' if b in batches else ' (interp.)'}" for b in range(1, profile.max_batch + 1))]
    print(f"\n{profile.name}: {clock} seconds per batch (median), N={profile.steps}")
    print(table(headers, [[k, *profile.latency_s[k]] for k in profile.levels]))


if __name__ == "__main__":  # the same as `argus profile latency ...`: its own parser ended a usage error, a Ctrl-C or
    # a worker's death in a traceback (exit 1), with no log line of what it warned of
    from engine.cli import main

    sys.exit(main(["profile", "latency", *sys.argv[1:]]))
