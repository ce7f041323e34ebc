"""`sim`: a SIMULATION of GPU time and image quality, for driving the real engine at cluster scale.

No model runs. A batch sleeps for the latency a `LatencyProfile` gives its level K
and batch size (times a time scale) and answers with a flat image of the
requested size, small placeholder latents (or zeros of SD-XL's shape for the size,
given `latents="sdxl"`), and the quality the controller's
`QualityModel` gives the item's level and neighbour similarity. Everything it
reports says `simulated`. Nothing here imports torch.
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
from PIL import Image

from controller.level_shares import covering_level
from controller.profiles import LatencyProfile, ProfileLatency, QualityModel
from controller.similarity import SimilarityTable
from protocols.codec import Blob
from protocols.worker_messages import Generate, ItemCancelled, ItemDone, ItemOutcome
from workers.backend import (
    Backend,
    BackendInfo,
    BatchRefused,
    StepControl,
    all_aborted,
    cancel_all,
    check_batch,
    latents_to_return,
)
from workers.image_encoding import encode_image
from workers.limits import (
    BACKEND_MAX_BATCH,
    BACKEND_SIZES,
    DEFAULT_LEVELS,
    DEFAULT_STEPS,
    PLACEHOLDER_LATENTS,
    SIM_LATENTS,
    latent_shape,
)
from workers.model_id import SIM_PROFILE, sim_model_id

# sleep in slices no longer than this, so heartbeats and aborts are served
_SLICE_S = 0.05


class SimBackend(Backend):
    def __init__(
        self,
        similarity: SimilarityTable,
        profile: LatencyProfile | None = None,
        time_scale: float = 1.0,
        levels: tuple[int, ...] = DEFAULT_LEVELS,
        default_steps: int = DEFAULT_STEPS,
        max_batch: int = BACKEND_MAX_BATCH["sim"],
        latents: str = PLACEHOLDER_LATENTS,
    ):
        """`similarity` is the engine's embedder's table: the quality model is calibrated on it.

        `profile` defaults to the bundled `sdxl_a100` latency profile. `latents` (SIM_LATENTS): tiny placeholders
        whatever the size, or SD-XL's shape for it, at its cost in bytes; the model's identity names which.
        """
        if latents not in SIM_LATENTS:
            raise ValueError(f"latents {latents!r}: not one of {', '.join(SIM_LATENTS)}")
        unknown = set(levels) - set(similarity.levels)
        if unknown:
            raise ValueError(f"levels {sorted(unknown)} are not in the similarity table {similarity.levels}")
        self._time_scale = time_scale
        self._latents = latents
        profile = profile or LatencyProfile.bundled(SIM_PROFILE)
        self._latency = ProfileLatency(profile)
        self._quality = QualityModel(similarity)
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
            model_id=sim_model_id(profile, latents),
            time_scale=time_scale,
        )

    def describe(self) -> BackendInfo:
        return self._info

    def check(self, batch: Generate) -> None:
        """Raises BatchRefused for a batch it cannot run as asked, before any of its simulated time is spent."""
        check_batch(self._info, batch)
        if batch.level:
            # as a real backend needs a neighbour's latent, the quality model needs its similarity
            lacking = [item.request_id for item in batch.items if item.similarity is None]
            if lacking:
                raise BatchRefused(f"level {batch.level} items without a neighbour similarity: {lacking}")

    def run(self, batch: Generate, control: StepControl) -> list[ItemOutcome]:
        started = time.perf_counter()
        self.check(batch)
        remaining_steps = batch.steps - batch.level
        duration = self._time_scale * self._latency.seconds(batch.level, batch.steps, len(batch.items))
        deadline = started + duration
        while True:
            control.between_steps()
            left = deadline - time.perf_counter()
            if left <= 0:
                # run through: a stop that came in the last slice finds the images made, and they are answered, as
                # a real backend answers those whose steps are all done (only the engine's cancels count, below)
                break
            if all_aborted(batch, control):
                return cancel_all(batch)  # cut short: nothing was made
            time.sleep(min(left, _SLICE_S))
        run_ms = (time.perf_counter() - started) * 1000.0
        image = Blob(_flat_image(batch.width, batch.height, batch.output_format, batch.output_compression))
        later_levels = latents_to_return(self._info, batch)
        shape = latent_shape("sim", batch.width, batch.height, self._latents)
        placeholders = np.zeros((len(later_levels), *shape), np.float16) if later_levels else None
        judged_at = self._judged_level(batch)
        outcomes: list[ItemOutcome] = []
        for item in batch.items:
            if control.cancelled(item.request_id):
                outcomes.append(ItemCancelled(item.request_id))
                continue
            outcomes.append(
                ItemDone(
                    item.request_id,
                    image,
                    batch.level,
                    later_levels,
                    placeholders,
                    run_ms,
                    remaining_steps,
                    # the prompt itself is the key: the model hashes it with blake2b, the same in every process
                    quality=self._quality.quality(judged_at, item.similarity, item.prompt),
                )
            )
        return outcomes

    def _judged_level(self, batch: Generate) -> int:
        """The level (of the default 50 steps, as the quality model's) whose quality a resume at `batch.level` of
        `batch.steps` has: the one that covers its share of the run (controller/level_shares.py). The engine resumes
        at no share past the top level's; one that did is modelled at the top level."""
        if not batch.level:
            return 0
        levels = self._quality.table.levels
        return covering_level(batch.level, batch.steps, DEFAULT_STEPS, levels) or levels[-1]


@lru_cache(maxsize=64)
def _flat_image(width: int, height: int, output_format: str, compression: int | None) -> bytes:
    return encode_image(Image.new("RGB", (width, height), (128, 128, 128)), output_format, compression)
