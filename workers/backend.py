"""The interface every generation backend implements (sdxl, tiny, sim)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

from protocols.worker_messages import Generate, ItemOutcome


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


class BatchAborted(Exception):
    """Raised inside a run when every item of the batch has been aborted."""


class Backend(ABC):
    @abstractmethod
    def describe(self) -> BackendInfo: ...

    @abstractmethod
    def run(self, batch: Generate, control: StepControl) -> list[ItemOutcome]:
        """Runs the batch's remaining steps; one outcome per item, in order.

        Items aborted while running come back as ItemCancelled. An exception
        escaping run() fails the whole batch (the worker answers every item).
        """
