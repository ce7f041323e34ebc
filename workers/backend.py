"""The interface every generation backend implements (sdxl, tiny, sim)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from protocols.limits import MAX_STEPS, OUTPUT_FORMATS
from protocols.worker_messages import Generate, ItemCancelled, ItemOutcome
from workers.limits import SizeLimits, steps_refusal


@dataclass(frozen=True, slots=True)
class BackendInfo:
    name: str
    device: str
    simulated: bool
    levels: tuple[int, ...]  # cache levels K (each below default_steps)
    max_batch: int
    default_steps: int
    min_size: int
    max_size: int
    default_size: int
    model_id: str  # what it runs, by content (workers/model_id.py): every worker of an engine runs one model
    # step counts (1 to MAX_STEPS) it cannot run as exactly that many denoising steps: its scheduler makes another
    # number of timesteps for them (diffusers' "trailing" spacing makes 62 for 61), or none
    refused_steps: tuple[int, ...] = ()
    # what its run times are multiplied by: a simulated worker's --time-scale, 1 for a real model
    time_scale: float = 1.0


class StepControl(Protocol):
    """What a backend calls between denoising steps."""

    def between_steps(self) -> None:
        """Lets the worker answer heartbeats and take in aborts."""

    def is_aborted(self, request_id: str) -> bool:
        """Whether to stop computing for this request: it was cancelled, or the worker is stopping."""

    def cancelled(self, request_id: str) -> bool:
        """Whether the engine aborted this request: its outcome is ItemCancelled even when its image is made. A
        worker that is stopping stops computing, but what it has finished is still worth sending."""


class BackendUnavailable(Exception):
    """The backend cannot start on this host as configured (its device, its model): `argus worker` says why in one
    line and exits 2, where a traceback would have it restarted for ever."""


class BatchRefused(ValueError):
    """A batch the backend cannot run as asked (a size, a step count, a level it does not take): the batch's fault,
    not the worker's. Its items are answered failed, REFUSED, and the engine says so in one line naming the worker,
    the requests and why, where a failure of the worker's own logs its traceback."""


class BatchAborted(Exception):
    """Raised inside a run when every item of the batch has been aborted."""


def check_batch(info: BackendInfo, batch: Generate) -> None:
    """Raises BatchRefused for a batch a backend described by `info` cannot run as asked. Every backend asks it: the
    sim backend, which asked none of it, answered a level past the steps as made (steps_run -10), an unknown format
    as its own failure, and drew an image of any size it was sent."""
    if not 1 <= len(batch.items) <= info.max_batch:
        raise BatchRefused(f"batch of {len(batch.items)} items; this backend takes 1 to {info.max_batch}")
    if not 0 <= batch.level < batch.steps:
        raise BatchRefused(f"level {batch.level} is not below steps {batch.steps}")
    if batch.steps > MAX_STEPS:
        # past the counts the backend checked its scheduler makes exactly (refused_steps): run unchecked, and as long
        # as the engine asked (a step count of 2**40 its scheduler's timesteps alone would not fit in memory)
        raise BatchRefused(f"steps {batch.steps}: more than {MAX_STEPS}, the most a request may ask for")
    if refused := steps_refusal(batch.steps, info.refused_steps):
        # run, it would make other than steps - level UNet evaluations, and its latents at every level wrong
        raise BatchRefused(refused)
    sizes = SizeLimits.of(info)
    if not (sizes.takes(batch.width) and sizes.takes(batch.height)):
        raise BatchRefused(f"size {batch.width}x{batch.height}: each side must be {sizes.rule}")
    if batch.output_format not in OUTPUT_FORMATS:
        raise BatchRefused(f"unsupported output format {batch.output_format!r}")
    if not math.isfinite(batch.guidance_scale):
        # an infinite scale ran to a black image answered as made (NaN ran unguided: it is not above 1)
        raise BatchRefused(f"guidance scale {batch.guidance_scale}: not a finite number")


def all_aborted(batch: Generate, control: StepControl) -> bool:
    """Whether no item of the batch is worth computing any more: the run stops, and cancel_all answers it."""
    return all(control.is_aborted(item.request_id) for item in batch.items)


def all_cancelled(batch: Generate, control: StepControl) -> bool:
    """Whether the engine aborted every item of the batch: its images, even made, are answered cancelled."""
    return all(control.cancelled(item.request_id) for item in batch.items)


def cancel_all(batch: Generate) -> list[ItemOutcome]:
    return [ItemCancelled(item.request_id) for item in batch.items]


def latents_to_return(info: BackendInfo, batch: Generate) -> list[int]:
    """The levels whose latents a run of `batch` brings back, ascending: those it passes through (above the level it
    starts at, below its steps) of the worker's cache levels that the engine asks for."""
    asked = info.levels if batch.latent_levels is None else set(batch.latent_levels)
    return [k for k in info.levels if batch.level < k < batch.steps and k in asked]


def run_part(
    batch: Generate,
    part: Generate,
    run: Callable[[Generate], list[ItemOutcome]],
    left_out: Callable[[str], ItemOutcome],
) -> list[ItemOutcome]:
    """Runs `part` (the batch with some of its items, in order) and answers each item it leaves out with
    left_out(request_id): every item's outcome, in the batch's order. A part with no item is not run."""
    if len(part.items) == len(batch.items):
        return run(batch)
    kept = {item.request_id for item in part.items}
    made = iter(run(part) if kept else [])
    return [next(made) if item.request_id in kept else left_out(item.request_id) for item in batch.items]


class Backend(ABC):
    @abstractmethod
    def describe(self) -> BackendInfo: ...

    @abstractmethod
    def run(self, batch: Generate, control: StepControl) -> list[ItemOutcome]:
        """Runs the batch's remaining steps; one outcome per item, in order.

        Items aborted while running come back as ItemCancelled. An exception
        escaping run() fails the whole batch (the worker answers every item).
        """
