"""`sim`: a SIMULATION of GPU time, for driving the real engine at cluster scale.

No model runs. A batch sleeps for a profiled latency (per level K and batch size,
scaled by a time factor) and answers with a flat image of the requested size and
small placeholder latents. Everything it reports says `simulated`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from protocols.codec import Blob
from protocols.worker_messages import Generate, ItemCancelled, ItemDone, ItemOutcome
from workers.backend import Backend, BackendInfo, StepControl
from workers.image_encoding import encode_image
from workers.limits import BACKEND_SIZES, DEFAULT_LEVELS, DEFAULT_STEPS

# placeholder latents: the engine's cache treats them like real ones, at a size
# that keeps a thousand simulated workers cheap to feed
_PLACEHOLDER_LATENT_SHAPE = (4, 2, 2)
# sleep in slices no longer than this, so heartbeats and aborts are served
_SLICE_S = 0.05


@dataclass(frozen=True, slots=True)
class SimLatency:
    """Latency of one batch: fixed part plus per-step part, sub-linear in batch.

    Defaults model SD-XL at 1024 px on one A100 (data/reference.md: about 5.1 s
    for 50 steps at batch 1, i.e. roughly 0.09 s a step plus about 0.6 s of text
    encoding and VAE decode; batching gains at most about 2x per image).
    """

    fixed_s: float = 0.6
    step_s: float = 0.09
    # each extra image in a batch costs this share of a lone image
    batch_marginal: float = 0.5

    def seconds(self, steps_to_run: int, batch_size: int) -> float:
        single = self.fixed_s + self.step_s * steps_to_run
        return single * (1.0 + self.batch_marginal * (batch_size - 1))


class SimBackend(Backend):
    def __init__(
        self,
        time_scale: float = 1.0,
        latency: SimLatency = SimLatency(),
        levels: tuple[int, ...] = DEFAULT_LEVELS,
        default_steps: int = DEFAULT_STEPS,
        max_batch: int = 8,
    ):
        self._time_scale = time_scale
        self._latency = latency
        sizes = BACKEND_SIZES["sim"]
        self._info = BackendInfo(
            name="sim",
            device="sim",
            simulated=True,
            levels=levels,
            max_batch=max_batch,
            default_steps=default_steps,
            min_size=sizes.min_size,
            max_size=sizes.max_size,
            default_size=sizes.default_size,
        )

    def describe(self) -> BackendInfo:
        return self._info

    def run(self, batch: Generate, control: StepControl) -> list[ItemOutcome]:
        started = time.perf_counter()
        remaining_steps = batch.steps - batch.level
        duration = self._time_scale * self._latency.seconds(remaining_steps, len(batch.items))
        deadline = started + duration
        while True:
            control.between_steps()
            if all(control.is_aborted(item.request_id) for item in batch.items):
                break
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            time.sleep(min(left, _SLICE_S))
        run_ms = (time.perf_counter() - started) * 1000.0
        image = Blob(_flat_image(batch.width, batch.height, batch.output_format))
        later_levels = [k for k in self._info.levels if batch.level < k < batch.steps]
        placeholders = np.zeros((len(later_levels), *_PLACEHOLDER_LATENT_SHAPE), np.float16) if later_levels else None
        outcomes: list[ItemOutcome] = []
        for item in batch.items:
            if control.is_aborted(item.request_id):
                outcomes.append(ItemCancelled(item.request_id, batch.batch_id))
                continue
            outcomes.append(
                ItemDone(
                    item.request_id,
                    batch.batch_id,
                    image,
                    batch.level,
                    later_levels,
                    placeholders,
                    run_ms,
                    remaining_steps,
                )
            )
        return outcomes


@lru_cache(maxsize=64)
def _flat_image(width: int, height: int, output_format: str) -> bytes:
    return encode_image(Image.new("RGB", (width, height), (128, 128, 128)), output_format)
