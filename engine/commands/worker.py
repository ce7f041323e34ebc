"""`argus worker`: its flags, what they cannot be run with, and the run; and the backend flags `argus serve` checks
alike for the workers it starts."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from typing import NoReturn

from engine.commands.arg_types import (
    UsageError,
    batch_size,
    client_keys,
    engine_address,
    none_empty,
    positive_float,
    positive_int,
    sim_time_scale,
    thread_count,
    torch_device,
)
from engine.commands.help_format import BACKEND_HELP
from protocols.curve import ClientKeys
from protocols.limits import MAX_BATCH
from workers.backend import BackendUnavailable
from workers.cannot_serve import tell_starter
from workers.config import DEFAULT_STALL_TIMEOUT_S, WorkerConfig, runs_on_cpu_threads
from workers.devices import device_problem
from workers.limits import PLACEHOLDER_LATENTS, SDXL_LATENTS, SIM_LATENTS
from workers.main import CANNOT_SERVE_EXIT, INTERRUPTED_EXIT, SIM_SIMILARITY_TABLE_ENV
from workers.model_folder import sdxl_model_problem
from workers.model_loading import ModelLoadFailed
from workers.runtime import MAX_WORKER_ID_BYTES, worker_id_problem


class CommandParser(argparse.ArgumentParser):
    """argus's parser, and so each command's (argparse makes them of its class). A usage error in a worker an engine
    (or a profile) started is in the command that starter built, and fails every start the same way: it is told the
    starter as why the worker cannot serve (workers/cannot_serve.py), said once by it, not argparse's usage block
    printed at each start of each slot. Anyone else gets argparse's usage error, exit 2."""

    def error(self, message: str) -> NoReturn:
        if tell_starter(f"{self.prog} refused the command it was started with: {message}"):
            sys.exit(CANNOT_SERVE_EXIT)
        super().error(message)

    # argus's own flags (--log-level, --log-format), which go before the command: set on each command by build_parser
    argus_flags: frozenset[str] = frozenset()

    def parse_known_args(self, args=None, namespace=None):
        parsed, unknown = super().parse_known_args(args, namespace)
        if unknown and not any(isinstance(action, argparse._SubParsersAction) for action in self._actions):
            # a command's own to refuse: argparse hands them up to `argus`, which said `argus: error: unrecognized
            # arguments: --threads 1` under its list of commands, naming neither the command nor the flags it takes
            self.error(f"unrecognized arguments: {' '.join(unknown)}{self._misplaced(unknown)}")
        return parsed, unknown

    def _misplaced(self, unknown: list[str]) -> str:
        """Where an argus flag given after the command goes (`argus serve --log-level DEBUG`: unrecognized, said of
        the flag README.md names)."""
        flags = [arg.split("=", 1)[0] for arg in unknown if arg.split("=", 1)[0] in self.argus_flags]
        if not flags:
            return ""
        command = self.prog.removeprefix("argus ")
        return f"; {flags[0]} is argus's own flag: give it before the command, as `argus {flags[0]} ... {command}`"


def add_worker_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run one worker process that connects to an engine")
    p.add_argument(
        "--connect", required=True, type=engine_address, help="the engine's worker address, e.g. tcp://HOST:5556"
    )
    p.add_argument("--worker-id", default=None, help="a name for this worker (default: host and pid)")
    p.add_argument("--backend", default="tiny", choices=["tiny", "sdxl", "sim"], help=BACKEND_HELP)
    p.add_argument("--device", type=torch_device, help="cpu or cuda:N (default cpu)")
    p.add_argument("--model", help="local diffusers SD-XL directory (sdxl backend)")
    p.add_argument("--time-scale", type=sim_time_scale, help="sim backend: multiply simulated GPU time (default 1)")
    add_sim_latents_argument(p)
    p.add_argument("--max-batch", type=batch_size, help=f"largest batch, 1 to {MAX_BATCH} (default: the backend's)")
    p.add_argument(
        "--threads",
        type=thread_count,
        help="torch threads for a model on the CPU (default: torch's own, every core); not for sim, nor a GPU",
    )
    p.add_argument(
        "--die-with-parent",
        action="store_true",
        help="spawned by an engine: exit when it dies or shuts down; ignore Ctrl-C (meant for it)",
    )
    p.add_argument(
        "--count",
        type=positive_int,
        default=1,
        help="sim backend: run this many SIMULATED workers in this one process (ids WORKER_ID-0 .. WORKER_ID-N-1)",
    )
    p.add_argument(
        "--stall-timeout",
        type=positive_float,
        metavar="S",
        help="a batch that shows no denoising step for S seconds stops being vouched for by heartbeats, so the"
        f" engine counts the worker hung (default {DEFAULT_STALL_TIMEOUT_S:g}; raise it for very slow steps); not for"
        " sim, which runs no model",
    )
    p.add_argument("--curve-key", metavar="FILE", help="this worker's .key_secret file (engine requires CURVE)")
    p.add_argument("--curve-server-key", metavar="FILE", help="the engine's public .key file")
    p.set_defaults(func=_worker)


def add_sim_latents_argument(p: argparse.ArgumentParser) -> None:
    """`argus worker`'s and `argus serve`'s (for its workers): the flag names a sim model of its own
    (workers/model_id.py sim_model_id), so an engine and its workers must be given the same."""
    p.add_argument(
        "--sim-latents",
        choices=SIM_LATENTS,
        help="sim backend: the latents its workers pass, tiny placeholders or zeros of SD-XL's shape for the image"
        " size (a prompt cache of real size, as `argus bench checkpoint` times; another model: give the engine and"
        " its workers the same) (default placeholder)",
    )


def stopped_as_it_started() -> int:
    """Ctrl-C as a worker started by hand imports what it runs: one line and the shells' code for it, not a traceback
    of the imports (its model's load says its own, workers/main.py)."""
    logging.getLogger("argus.worker").info("stopped as it started")
    return INTERRUPTED_EXIT


def check_backend_flags(
    backend: str,
    model: str | None,
    device: str | list[str] | None,
    time_scale: float | None = None,
    sim_latents: str | None = None,
) -> None:
    """`argus serve` (for the workers it starts), `argus worker` and `argus profile` alike: only the sim backend's
    time is simulated, so only it scales, and only its latents are placeholders; only the sdxl backend reads a
    --model (tiny builds its own, sim runs none); and only a model runs on a --device (`device`: the flag's value,
    None when not given)."""
    if time_scale is not None and backend != "sim":
        raise UsageError("--time-scale scales the sim backend's simulated time: add --backend sim, or drop it")
    if sim_latents is not None and backend != "sim":
        raise UsageError(f"--sim-latents is for the sim backend; {backend} passes its model's own: drop it")
    if model and backend != "sdxl":
        # the default backend is tiny: `--model DIR` alone served the tiny model's pictures as SD-XL's
        raise UsageError(f"--model is read by the sdxl backend only, not {backend}: add --backend sdxl, or drop it")
    if device and backend == "sim":
        # accepted and ignored: a sim worker given --device cuda:0 said it ran on "sim"
        raise UsageError("--device is for the model backends (tiny, sdxl); sim runs no model")


def check_device(device: str | None) -> None:
    """A cuda or mps --device this host lacks, refused before a worker is started for it (`argus serve`'s local
    workers, `argus worker`, `argus profile`): each worker failed as it loaded its backend, one by one, and a
    profile ended in a traceback. A sim worker has none (check_backend_flags), and imports no torch."""
    if device and (problem := device_problem(device)):
        raise UsageError(f"--device {device}: {problem}")


def check_threads(backend: str, device: str | None, threads: int | None) -> None:
    """--threads sets torch's CPU threads, which bound a model run on the CPU alone: given to a sim worker or one on
    a GPU, it was taken and ignored without a word."""
    if not threads or runs_on_cpu_threads(backend, device):
        return
    runs = "the sim backend runs no model" if backend == "sim" else f"a worker on {device} runs its model there"
    raise UsageError(f"--threads sets torch's threads for a model on the CPU; {runs}: drop it")


def check_sim_embedder() -> None:
    """The embedder a sim worker's modelled quality is calibrated on, named by the variable its engine's launchers
    set (workers/main.py), must have a bundled table: a typo (CLIP) for a worker started by hand ended it, or a fleet,
    in a KeyError traceback as it built its backend."""
    from controller.similarity import bundled_embedders

    embedder = os.environ.get(SIM_SIMILARITY_TABLE_ENV)
    if embedder is not None and embedder not in (known := bundled_embedders()):
        raise UsageError(
            f"{SIM_SIMILARITY_TABLE_ENV} {embedder!r}: no bundled similarity table for that embedder"
            f" ({', '.join(known)}): set it to the engine's --embedder, or unset it for hash"
        )


def check_model(model_dir: str) -> None:
    problem = sdxl_model_problem(model_dir)
    if problem:
        raise UsageError(f"--model: {problem}")


def check_worker_backend(
    backend: str,
    model: str | None,
    device: str | None,
    time_scale: float | None,
    threads: int | None = None,
    sim_latents: str | None = None,
) -> None:
    """What a worker refuses as it starts, before its backend is imported: `argus worker`'s, and the one `argus
    profile` starts, which is checked before it starts (the profile ended in a traceback as it exited)."""
    check_backend_flags(backend, model, device, time_scale, sim_latents)
    check_threads(backend, device, threads)
    check_device(device)
    if backend == "sim":
        check_sim_embedder()
    if backend == "sdxl":
        if not model:
            raise UsageError("--backend sdxl needs --model DIR (a local diffusers SD-XL folder)")
        check_model(model)


def check_worker_args(args: argparse.Namespace) -> None:
    """Refuses what would start and then fail, or silently ignore a flag."""
    none_empty(args, "--model", "--curve-key", "--curve-server-key")
    if args.count != 1:
        if args.backend != "sim":
            raise UsageError("--count runs simulated workers only: add --backend sim")
        if args.device or args.threads or args.stall_timeout:
            raise UsageError("--count runs simulated workers, which use no --device, --threads or --stall-timeout")
        if args.sim_latents == SDXL_LATENTS:
            # a fleet stands in for a cluster's thousand workers, which SD-XL's latents (640 KiB an image) would swamp
            raise UsageError("--count runs many simulated workers in one process with placeholder latents only")
    if args.backend == "sim" and args.stall_timeout:
        # a simulated run shows a step every few tens of ms as it sleeps: no stretch without one for the flag to bound
        raise UsageError("--stall-timeout bounds a model's stretch without a denoising step; the sim backend runs none")
    check_worker_backend(args.backend, args.model, args.device, args.time_scale, args.threads, args.sim_latents)
    if args.worker_id is not None and (problem := worker_id_problem(args.worker_id)):
        # an empty id quietly became the default (host and pid)
        raise UsageError(f"--worker-id {args.worker_id!r}: {problem}")
    if args.worker_id:
        longest = args.worker_id if args.count == 1 else f"{args.worker_id}-{args.count - 1}"
        if len(longest.encode()) > MAX_WORKER_ID_BYTES:
            # the ZeroMQ identity would not fit: the worker would die as it connects
            suffix = "" if args.count == 1 else f" with --count's suffix -{args.count - 1}"
            raise UsageError(f"--worker-id is {len(longest.encode())} bytes{suffix}; at most {MAX_WORKER_ID_BYTES}")


def worker_log_name(args: argparse.Namespace) -> str | None:
    """What each log record of an `argus worker` process names it by (engine/logs/setup.py): its worker id, or a
    fleet's ids (`gpu-0..999`: a line about one of them names it); None for any other command."""
    if args.command != "worker":
        return None
    worker_id = args.worker_id or _default_worker_id()
    return worker_id if args.count == 1 else f"{worker_id}-0..{args.count - 1}"


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _worker(args: argparse.Namespace) -> int:
    try:
        return _run_worker(args)
    except (UsageError, ModelLoadFailed) as error:
        # started by an engine (or a profile), which says why once for all its workers and their restarts
        if tell_starter(str(error)):
            return CANNOT_SERVE_EXIT
        raise


def _run_worker(args: argparse.Namespace) -> int:
    from workers.main import run_worker

    check_worker_args(args)
    worker_id = args.worker_id or _default_worker_id()
    time_scale = 1.0 if args.time_scale is None else args.time_scale
    if args.count != 1:
        from workers.fleet import run_fleet

        return run_fleet(
            args.connect,
            args.count,
            worker_id,
            time_scale,
            args.max_batch,
            _client_keys(args),
            die_with_parent=args.die_with_parent,
        )
    config = WorkerConfig(
        connect=args.connect,
        worker_id=worker_id,
        backend=args.backend,
        device=args.device or "cpu",
        model=args.model,
        time_scale=time_scale,
        sim_latents=args.sim_latents or PLACEHOLDER_LATENTS,
        max_batch=args.max_batch,
        threads=args.threads,
        die_with_parent=args.die_with_parent,
        owned=args.die_with_parent,  # only an engine spawns its workers so
        curve=_client_keys(args),
        stall_timeout_s=args.stall_timeout or DEFAULT_STALL_TIMEOUT_S,
        log_level=args.log_level,
        log_format=args.log_format,
    )
    try:
        return run_worker(config)
    except BackendUnavailable as error:
        raise UsageError(str(error)) from None


def _client_keys(args: argparse.Namespace) -> ClientKeys | None:
    if bool(args.curve_key) != bool(args.curve_server_key):
        raise UsageError("--curve-key and --curve-server-key go together")
    if args.curve_key:
        return client_keys(args.curve_key, args.curve_server_key)
    try:
        return ClientKeys.from_env()
    except ValueError as error:
        raise UsageError(str(error)) from None
