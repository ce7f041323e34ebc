"""Entry point of one worker process (`argus worker`)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Protocol

from protocols.worker_messages import PROTOCOL_VERSION, Probe
from workers.backend import Backend
from workers.config import WorkerConfig
from workers.devices import on_device
from workers.engine_probe import refusal_before_loading
from workers.model_folder import sdxl_model_problem
from workers.model_id import folder_model_id
from workers.runtime import EngineRefused, WorkerRuntime

if TYPE_CHECKING:
    from controller.similarity import SimilarityTable

log = logging.getLogger("argus.worker")

_PR_SET_PDEATHSIG = 1
# names the engine's embedder, whose level table the sim backend's quality model is calibrated on
SIM_SIMILARITY_TABLE_ENV = "ARGUS_SIM_SIMILARITY_TABLE"
# the pid of the engine that spawned this worker, to tell whether it died before PR_SET_PDEATHSIG was set
PARENT_PID_ENV = "ARGUS_PARENT_PID"
# the exit code of a worker that cannot serve as configured: a usage error, a model or device it cannot use (engine/
# cli.py, UsageError), or refused by its engine. Started again the same way, it fails the same way
CANNOT_SERVE_EXIT = 2
ENGINE_REFUSED = "engine refused this worker: %s"
# a worker stopped by Ctrl-C before it served: the shells' code for a process that SIGINT ended
INTERRUPTED_EXIT = 130
# what stops a worker that started with SIGTERM ignored: an engine's local worker (engine/fleet/launcher.py), which its
# engine stops with it once drained, and Linux when its engine dies (--die-with-parent)
ENGINE_STOP_SIGNAL = signal.SIGUSR1


def load_backend(config: WorkerConfig) -> Backend:
    # imported here so a sim worker never imports torch
    if config.backend == "sim":
        from workers.sim_backend import SimBackend

        table = sim_similarity_table(os.environ.get(SIM_SIMILARITY_TABLE_ENV, "hash"))
        return SimBackend(table, time_scale=config.time_scale, latents=config.sim_latents, **_batch_override(config))
    if config.backend == "sdxl":
        if not config.model:
            raise SystemExit("the sdxl backend needs --model DIR (a local diffusers SD-XL folder)")
        # checked before torch and diffusers are imported (seconds of a core): a Ray actor, which reads --model on the
        # host Ray placed it on (the engine checks it for its local workers alone), said the folder was not there only
        # after them, at each of its slot's starts until it was given up (engine/fleet/restart_backoff.py)
        problem = sdxl_model_problem(config.model)
        if problem:
            raise FileNotFoundError(problem)
    if config.threads and config.device == "cpu":
        import torch

        torch.set_num_threads(config.threads)
    if config.backend == "tiny":
        from workers.diffusion_backend import load_tiny

        return load_tiny(device=config.device, **_batch_override(config))
    if config.backend == "sdxl":
        from workers.diffusion_backend import load_sdxl

        return load_sdxl(config.model, device=config.device, **_batch_override(config))
    raise SystemExit(f"unknown backend {config.backend!r} (tiny, sdxl or sim)")


def sim_similarity_table(embedder: str) -> SimilarityTable:
    """The bundled similarity table of the engine's embedder, which the modelled quality is calibrated to.

    A worker cannot ask which embedder its engine runs, hence the environment
    variable (the launcher sets it); "hash" is the engine's default embedder.
    Bundled even when the engine serves with a table of `argus calibrate`
    (`argus serve --similarity-table`): the modelled quality stands in for what
    the model makes of a neighbour's latent, which no table changes. Modelled
    on the engine's table instead, every table would score 95 at each of its
    own thresholds, and a simulation could not show what a looser or stricter
    one costs or saves.
    """
    from controller.similarity import SimilarityTable

    return SimilarityTable.bundled(embedder)


def _batch_override(config: WorkerConfig) -> dict:
    return {"max_batch": config.max_batch} if config.max_batch else {}


def probe_of(config: WorkerConfig) -> Probe:
    """What this worker's hello will say of it, as far as it is known before its model loads: an SD-XL folder's
    identity is read from its files; tiny's is of the pipeline it builds."""
    model = ""
    if config.backend == "sdxl" and config.model:
        try:
            model = folder_model_id(config.model)
        except (OSError, ValueError):
            pass  # the load says what is wrong with the folder
    return Probe(PROTOCOL_VERSION, config.worker_id, config.backend, model, os.getpid())


def stop_signal() -> signal.Signals:
    """The signal that stops this worker: SIGTERM, unless it started with SIGTERM ignored, as an engine starts its
    local workers. systemd's stop (KillMode=control-group, its default) sends SIGTERM to every process of the
    engine's service, and `kill -TERM -PGID` to its group: each worker stopped at its next step, its images given back
    to the engine draining them, which started it again to make them over from the first step (after a model load:
    minutes for SD-XL, past --shutdown-timeout). Ignoring it, they finish their work, as on Ctrl-C, and are stopped
    with ENGINE_STOP_SIGNAL. As Python does SIGINT, one ignored at the start stays ignored."""
    return ENGINE_STOP_SIGNAL if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN else signal.SIGTERM


def exit_with_parent() -> None:
    """Ask Linux to send this process its stop signal when the engine that spawned it dies, or exit if it already
    has.

    The request covers only a parent that dies after it is made: an engine that died while this process
    started (imports take a few hundred ms) left it to another parent, and it must not serve on alone.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, stop_signal())
    parent = os.environ.get(PARENT_PID_ENV)
    if parent and os.getppid() != int(parent):
        raise SystemExit(f"the engine that started this worker (pid {parent}) is gone")


def run_worker(config: WorkerConfig) -> int:
    if config.owned:
        # now, not once it serves: Ctrl-C (the engine's, see serve_until_stopped) killed a worker still loading its
        # model (minutes, for SD-XL), each with a traceback in the engine's terminal. A local worker starts with it
        # ignored already (engine/fleet/launcher.py); this is for a Ray actor, and one started by hand with the flag. So
        # with the SIGHUP of the engine's closed terminal, which the engine serves on after
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if config.die_with_parent:
        exit_with_parent()
    model = f" {config.model}" if config.model else ""
    try:
        if not config.owned and config.backend != "sim":  # an owned worker has its engine's keys; sim loads nothing
            refused = refusal_before_loading(config.connect, config.curve, probe_of(config))
            if refused:
                log.error(ENGINE_REFUSED, refused)
                return CANNOT_SERVE_EXIT
        # the log line is inside: Ctrl-C may land while its write returns, once the line is out
        log.info(
            "loading the %s backend%s %s", config.backend, model, on_device(config.device, config.backend == "sim")
        )
        backend = load_backend(config)
    except KeyboardInterrupt:  # a worker started by hand, stopped while it loads: no traceback of torch's imports
        log.info("stopped while loading the model")
        return INTERRUPTED_EXIT
    return serve_until_stopped(
        WorkerRuntime(
            backend,
            config.connect,
            config.worker_id,
            config.hello_retry_s,
            config.curve,
            owned=config.owned,
            stall_timeout_s=config.stall_timeout_s,
        ),
        owned=config.owned,
    )


class Serving(Protocol):
    def serve(self) -> None: ...

    def stop(self) -> None: ...


def serve_until_stopped(runner: Serving, owned: bool = False) -> int:
    """Serves until its stop signal (stop_signal), SIGINT, SIGHUP or (for an owned worker) the engine's Shutdown; exit
    code 2 if the engine refuses us.

    `owned`: the engine that spawned this process stops it, after draining. Ctrl-C in a terminal sends
    SIGINT to the engine and its workers alike; an owned worker ignores it and finishes what it runs.
    """

    def stop(*_: object) -> None:  # only flips a state; the loop notices between steps
        runner.stop()

    signal.signal(stop_signal(), stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN if owned else stop)
    if not owned and signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # ignored under nohup: it serves on
        # the hangup of the terminal it was started in (an SSH session dropped) killed it mid-batch, its Leaving
        # unsaid: the engine counted what it held a try lost, once it found it gone
        signal.signal(signal.SIGHUP, stop)
    try:
        runner.serve()
    except EngineRefused as exc:
        log.error(ENGINE_REFUSED, exc)
        return CANNOT_SERVE_EXIT
    return 0
