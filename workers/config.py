"""A worker's configuration, built from `argus worker` flags or by the engine's launcher."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from protocols.curve import ClientKeys
from workers.limits import PLACEHOLDER_LATENTS

# a run that shows no progress (no denoising step) for this long is left to the engine's heartbeat watch
DEFAULT_STALL_TIMEOUT_S = 120.0


def runs_on_cpu_threads(backend: str, device: str | None) -> bool:
    """Whether a worker's model runs on torch's CPU threads, which --threads sets: not the sim backend's (it runs
    no model), nor one on a GPU (`device`: None is the default, cpu)."""
    return backend != "sim" and (device or "cpu") == "cpu"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, under taskset or a container's cpuset; else the host's): what
    torch's CPU threads are shared among."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1


def threads_each(workers: int) -> int:
    """torch's CPU threads for each of `workers` workers on the CPUs this process may run on: shared among them, so
    that they do not oversubscribe those CPUs (and never more than a worker takes:
    engine/commands/arg_types.thread_count); at most $OMP_NUM_THREADS when it is set, the count torch takes for its
    threads: a worker given its share as
    --threads ran on more threads than the user had asked every process for."""
    share = max(1, usable_cpus() // max(1, workers))
    return min(share, _omp_threads() or share)


def _omp_threads() -> int | None:
    """$OMP_NUM_THREADS's count (its first, outermost level's), None when unset or not a count: OpenMP's runtime
    then ignores it too."""
    first = os.environ.get("OMP_NUM_THREADS", "").partition(",")[0].strip()
    return int(first) if re.fullmatch("[0-9]+", first) and int(first) > 0 else None


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    connect: str
    worker_id: str
    backend: str = "tiny"  # tiny | sdxl | sim
    device: str = "cpu"
    model: str | None = None  # local directory, sdxl only
    time_scale: float = 1.0  # sim only
    sim_latents: str = PLACEHOLDER_LATENTS  # sim only: workers/limits.py SIM_LATENTS
    max_batch: int | None = None  # None: the backend's own
    threads: int | None = None  # torch intra-op threads, for a model on the CPU (runs_on_cpu_threads)
    die_with_parent: bool = False
    # launched by an engine, which stops it: its Shutdown ends the worker, and Ctrl-C (meant for the engine)
    # does not. A worker started by hand outlives its engine, waiting for the next one on the same address.
    owned: bool = False
    hello_retry_s: float = 1.0
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    curve: ClientKeys | None = None  # set when the engine requires CURVE
    # `argus --log-level` and `--log-format` of the process it runs in: what an engine gives the workers it starts
    log_level: str = "INFO"
    log_format: str = "text"
