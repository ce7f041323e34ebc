"""The real backends: a diffusers SD-XL pipeline (`sdxl`, or the random `tiny`).

ApproxC: a level-K batch does not start from noise but from a cached
neighbour's latent after K of N steps, and runs only the remaining N-K steps
conditioned on its own prompt. Full (K=0) runs hand back their latents at every
cache level so the engine can cache them for later neighbours.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from typing import Any

import diffusers
import msgspec
import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from PIL import Image
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from protocols.codec import Blob
from protocols.limits import MAX_STEPS
from protocols.worker_messages import (
    REFUSED,
    Generate,
    GenerateItem,
    ItemCancelled,
    ItemDone,
    ItemFailed,
    ItemOutcome,
)
from workers.backend import (
    Backend,
    BackendInfo,
    BackendUnavailable,
    BatchAborted,
    StepControl,
    all_aborted,
    all_cancelled,
    cancel_all,
    check_batch,
    latents_to_return,
    run_part,
)
from workers.devices import device_problem
from workers.image_encoding import encode_image
from workers.limits import (
    BACKEND_MAX_BATCH,
    BACKEND_SIZES,
    DEFAULT_LEVELS,
    DEFAULT_STEPS,
    LATENT_CHANNELS,
    LATENT_SCALE,
    latent_shape,
)
from workers.model_folder import sdxl_model_problem, sdxl_part_variant, sdxl_scheduler_notice, sdxl_weights_variant
from workers.model_id import config_bytes, folder_model_id, model_id
from workers.model_loading import load_pretrained, loading
from workers.pipeline_fit import pipeline_misfit
from workers.seed_noise import first_noise, skip_to_step, step_generator

log = logging.getLogger("argus.models")

_SDXL_SIZES = BACKEND_SIZES["sdxl"]
_NAN_IMAGE = (
    "the model made an image of NaN or infinite values, which would be black: a float16 overflow (a VAE whose"
    " config.json sets force_upcast false though it needs float32, or a UNet that overflows), or spoilt weights"
)
# what a latent may hold: the dtypes the engine's cache keeps (the wire also carries uint8, for images)
_LATENT_DTYPES = (np.float16, np.float32)

# from_pretrained's name for the weights' dtype: diffusers 0.40 reads `dtype` and warns at `torch_dtype` (to go in
# 1.0); before 0.40 it reads only `torch_dtype`
_DTYPE_KEYWORD = (
    "dtype" if tuple(int(part) for part in diffusers.__version__.split(".")[:2]) >= (0, 40) else "torch_dtype"
)
# the pipeline's parts that hold weights, and from_pretrained's name for their dtype (transformers 5 reads `dtype`),
# smallest first: a broken one is found before the UNet's gigabytes are read
_WEIGHTED_PARTS = (
    ("vae", AutoencoderKL, _DTYPE_KEYWORD),
    ("text_encoder", CLIPTextModel, "dtype"),
    ("text_encoder_2", CLIPTextModelWithProjection, "dtype"),
    ("unet", UNet2DConditionModel, _DTYPE_KEYWORD),
)


class _ResumePipeline(StableDiffusionXLImg2ImgPipeline):
    """Img2img that resumes after exactly round(denoising_start * N) steps.

    Diffusers cuts the schedule at the timestep round(T * (1 - denoising_start)),
    which keeps one step too many whenever the N timesteps do not sit on that
    grid (N = 30, K = 10 runs 21 steps). Cutting by step index is exact for any
    N and any timestep spacing.
    """

    def get_timesteps(
        self,
        num_inference_steps: int,
        strength: float,
        device: Any,
        denoising_start: float | None = None,
    ) -> tuple[torch.Tensor, int]:
        if denoising_start is None:
            return super().get_timesteps(num_inference_steps, strength, device)
        done = round(denoising_start * num_inference_steps)
        # an indexed scheduler (Euler, DPM-Solver) must start at step `done`; one that steps by the timestep's
        # value alone (DDIM, DDPM) has no index to set
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(done)
        return self.scheduler.timesteps[done:], num_inference_steps - done


class DiffusionBackend(Backend):
    def __init__(
        self,
        pipe: StableDiffusionXLPipeline,
        name: str,
        device: str,
        model_id: str,
        levels: tuple[int, ...] = DEFAULT_LEVELS,
        default_steps: int = DEFAULT_STEPS,
        max_batch: int = 4,
        min_size: int = _SDXL_SIZES.min_size,
        max_size: int = _SDXL_SIZES.max_size,
        default_size: int = _SDXL_SIZES.default_size,
    ):
        if list(levels) != sorted(set(levels)) or not all(0 < k < default_steps for k in levels):
            raise ValueError(f"levels must be increasing and within (0, {default_steps}): {levels}")
        # _ResumePipeline and the latent capture count steps as scheduler timesteps, one UNet call each: a
        # second-order scheduler, or PNDM's extra warm-up timesteps, would shift every level
        probe = type(pipe.scheduler).from_config(pipe.scheduler.config)
        probe.set_timesteps(default_steps)
        if probe.order != 1 or len(probe.timesteps) != default_steps:
            raise ValueError(
                f"{type(pipe.scheduler).__name__} does not run one timestep per step"
                f" ({len(probe.timesteps)} timesteps for {default_steps} steps, order {probe.order})"
            )
        if problem := _step_problem(type(pipe.scheduler).from_config(pipe.scheduler.config), default_steps):
            raise ValueError(problem)
        refused_steps = _uneven_steps(probe)
        latent = (pipe.unet.config.in_channels, pipe.vae_scale_factor)
        if latent != (LATENT_CHANNELS, LATENT_SCALE):
            # the engine caches, and checks what it caches against, SD-XL's latent shape (workers/limits.py)
            raise ValueError(
                f"latents of {latent[0]} channels at 1/{latent[1]} of the image's sides, not SD-XL's"
                f" {LATENT_CHANNELS} at 1/{LATENT_SCALE}"
            )
        if misfit := pipeline_misfit(pipe):
            raise ValueError(misfit)
        self._text2img = pipe.to(device)
        # Shares the modules (no second copy of the weights). Not from_pipe():
        # without a dtype it casts the shared modules to float32.
        self._resume = _ResumePipeline(
            **pipe.components,
            force_zeros_for_empty_prompt=pipe.config.force_zeros_for_empty_prompt,
        )
        for pipeline in (self._text2img, self._resume):
            pipeline.set_progress_bar_config(disable=True)
        self._scheduler_template = pipe.scheduler
        self._vae_dtype = pipe.vae.dtype
        # what a latent may hold to start a run: it is cast to the UNet's dtype (float16 on CUDA) first
        self._latent_max = torch.finfo(pipe.unet.dtype).max
        self._device = torch.device(device)
        self._info = BackendInfo(
            name=name,
            device=device,
            simulated=False,
            levels=tuple(levels),
            max_batch=max_batch,
            default_steps=default_steps,
            min_size=min_size,
            max_size=max_size,
            default_size=default_size,
            model_id=model_id,
            refused_steps=refused_steps,
        )

    def describe(self) -> BackendInfo:
        return self._info

    def run(self, batch: Generate, control: StepControl) -> list[ItemOutcome]:
        check_batch(self._info, batch)
        # an item this backend cannot start from fails alone: its batch-mates are other clients' images
        problems = {item.request_id: problem for item in batch.items if (problem := self._latent_problem(batch, item))}
        runnable = [item for item in batch.items if item.request_id not in problems]
        return run_part(
            batch,
            msgspec.structs.replace(batch, items=runnable),
            lambda part: self._run_checked(part, control),
            lambda request_id: ItemFailed(request_id, REFUSED, problems[request_id]),
        )

    def _run_checked(self, batch: Generate, control: StepControl) -> list[ItemOutcome]:
        started = time.perf_counter()
        ids = [item.request_id for item in batch.items]
        if all_aborted(batch, control):
            return cancel_all(batch)
        try:
            images, captured, steps_run = self._denoise(batch, control)
        except BatchAborted:
            return cancel_all(batch)
        # NaN, cast to a pixel, is 0: the client got a black picture answered as made, the engine heard nothing
        spoilt = [not np.isfinite(image).all() for image in images]
        encoded = [
            None if bad else encode_image(_picture(image), batch.output_format, batch.output_compression)
            for image, bad in zip(images, spoilt, strict=True)
        ]
        run_ms = (time.perf_counter() - started) * 1000.0
        outcomes: list[ItemOutcome] = []
        levels = sorted(captured)
        for i, rid in enumerate(ids):
            if control.cancelled(rid):
                outcomes.append(ItemCancelled(request_id=rid))
                continue
            if spoilt[i]:
                # the worker's fault, not the request's: counted towards taking it out of rotation
                outcomes.append(ItemFailed(rid, "worker_error", _NAN_IMAGE))
                continue
            outcomes.append(
                ItemDone(
                    request_id=rid,
                    image=Blob(encoded[i]),
                    level=batch.level,
                    latent_levels=levels,
                    latents=np.stack([captured[k][i] for k in levels]) if levels else None,
                    run_ms=run_ms,
                    steps_run=steps_run,
                )
            )
        return outcomes

    def _denoise(self, batch: Generate, control: StepControl) -> tuple[np.ndarray, dict[int, np.ndarray], int]:
        """Runs steps level..steps-1; returns the images (floats in [0, 1], one a row), batched latents by level,
        steps run."""
        first, steps = batch.level, batch.steps
        capture = set(latents_to_return(self._info, batch))
        captured: dict[int, np.ndarray] = {}
        steps_run = 0
        # for a scheduler that draws noise at each step; a run in full draws its first noise from them first
        generators = [step_generator(item.seed) for item in batch.items]

        def on_step_end(pipe: Any, i: int, t: Any, tensors: dict[str, torch.Tensor]) -> dict:
            nonlocal steps_run
            steps_run += 1
            done = first + i + 1  # latents after step index i are the state after i+1 steps
            if done in capture:
                captured[done] = tensors["latents"].to(torch.float16).cpu().numpy()
            control.between_steps()
            # after the last step only the decode is left: a stopping worker answers the images (each cost every
            # step, to be made again elsewhere from the first), and stops there only for those the engine cancelled
            if all_aborted(batch, control) if done < steps else all_cancelled(batch, control):
                raise BatchAborted
            return {}

        common: dict[str, Any] = dict(
            prompt=[item.prompt for item in batch.items],
            negative_prompt=_negative_prompts(batch.items),
            num_inference_steps=steps,
            guidance_scale=batch.guidance_scale,
            generator=generators,
            callback_on_step_end=on_step_end,
            output_type="np",  # checked for NaN before it is cast to pixels (_run_checked)
        )
        pipeline = self._resume if first else self._text2img
        # a fresh scheduler per run: step and begin indices are per-run state
        template = self._scheduler_template
        pipeline.scheduler = type(template).from_config(template.config)
        shape = latent_shape(self._info.name, batch.width, batch.height)
        seeds = [item.seed for item in batch.items]
        dtype = self._text2img.unet.dtype
        try:
            with torch.inference_mode():
                if first:
                    skip_to_step(seeds, generators, shape, dtype, first)
                    start = torch.from_numpy(np.stack([item.latent for item in batch.items]))
                    out = pipeline(
                        image=start.to(self._device, dtype),
                        denoising_start=first / steps,
                        **common,
                    )
                else:
                    # drawn on the CPU in the run's dtype, as diffusers draws it: a seed's noise the same on any device
                    noise = first_noise(seeds, generators, shape, dtype)
                    out = pipeline(
                        width=batch.width,
                        height=batch.height,
                        latents=noise.to(self._device),
                        **common,
                    )
        finally:
            # diffusers casts a float16 VAE to float32 for the decode and back after it: a decode that failed (out
            # of memory at a large size) left it float32, and every later batch failed on the dtype mismatch
            if pipeline.vae.dtype != self._vae_dtype:
                pipeline.vae.to(self._vae_dtype)
        return out.images, captured, steps_run

    def _latent_problem(self, batch: Generate, item: GenerateItem) -> str | None:
        """Why this item's latent cannot start its run, or None. A NaN or an infinity ran to a black image answered
        as made; a uint8 array (which the wire carries, for images) to a meaningless one."""
        if batch.level == 0:
            return None if item.latent is None else f"{item.request_id}: a level-0 item takes no latent"
        shape = latent_shape(self._info.name, batch.width, batch.height)
        latent = item.latent
        if latent is None or latent.shape != shape or latent.dtype not in _LATENT_DTYPES:
            got = None if latent is None else f"{latent.dtype} {latent.shape}"
            return f"{item.request_id}: expected a float16 or float32 latent of shape {shape}, got {got}"
        if not np.isfinite(latent).all():
            return f"{item.request_id}: the latent holds NaN or infinite values"
        if float(np.abs(latent).max()) > self._latent_max:  # compared as a float16, the bound overflowed
            # a float32 latent beyond float16's range turned infinite as a float16 model took it: a black image
            return f"{item.request_id}: the latent holds values beyond the model's range (±{self._latent_max:g})"
        return None


def _picture(image: np.ndarray) -> Image.Image:
    """An image the pipeline decoded (height x width x 3, in [0, 1]) as diffusers' own output makes it."""
    return VaeImageProcessor.numpy_to_pil(image[None])[0]


def _step_problem(scheduler: Any, steps: int) -> str | None:
    """Why `scheduler` cannot take a step as the SD-XL pipelines take each (noise scaled by init_noise_sigma, the
    UNet's input by scale_model_input, then step), or None. Some load from a folder and fail only there: a flow
    matching scheduler (SD 3's, Flux's) has neither, a prediction_type the scheduler does not take (Euler
    ancestral's "sample") fails its step. The worker said hello, and failed every batch the engine sent it. One
    step of a 1x1 latent of zeros: microseconds."""
    noise = torch.zeros(1, LATENT_CHANNELS, 1, 1)
    try:
        scheduler.set_timesteps(steps)
        timestep = scheduler.timesteps[0]
        latents = noise * scheduler.init_noise_sigma
        scheduler.scale_model_input(latents, timestep)
        scheduler.step(noise, timestep, latents, return_dict=False)  # the UNet's prediction: zeros too
    except Exception as error:  # whatever a scheduler raises, the pipeline would raise it at every batch
        return f"{type(scheduler).__name__} cannot step an SD-XL run ({type(error).__name__}: {error})"
    return None


def _uneven_steps(scheduler: Any) -> tuple[int, ...]:
    """The step counts a client may ask for that `scheduler` does not make into exactly that many timesteps.

    The resume and the latent capture count steps as timesteps. Diffusers' "trailing" spacing steps back from 1000
    by a float 1000 / N, and for N = 61, 103, 121 and 122 keeps one timestep more (a last one at -1): such a run
    made N + 1 UNet evaluations, and one resumed at K made N - K + 1. Some schedulers refuse some counts (LCM: any
    above its original_inference_steps). A few ms for all of them at the worker's start."""
    refused = []
    with warnings.catch_warnings():
        # diffusers' Euler schedulers warn at each set_timesteps under NumPy 2 (of their own __array__ use): once a
        # request is nothing, 200 at each start buried a test run's summary
        warnings.simplefilter("ignore", DeprecationWarning)
        for steps in range(1, MAX_STEPS + 1):
            try:
                scheduler.set_timesteps(steps)
                exact = len(scheduler.timesteps) == steps
            except Exception:  # whatever a scheduler raises for a count, it cannot run that count
                exact = False
            if not exact:
                refused.append(steps)
    return tuple(refused)


def _negative_prompts(items: list[GenerateItem]) -> list[str] | None:
    """None when no item has one: diffusers then guides by zeros (SD-XL's force_zeros_for_empty_prompt), which an
    encoded "" is not. The engine never mixes the two in a batch; an item without one in a batch that has them gets
    "" (the images differ slightly from a batch with none)."""
    if all(item.negative_prompt is None for item in items):
        return None
    return [item.negative_prompt or "" for item in items]


def load_tiny(
    device: str = "cpu",
    *,
    seed: int = 0,
    levels: tuple[int, ...] = DEFAULT_LEVELS,
    default_steps: int = DEFAULT_STEPS,
    max_batch: int = BACKEND_MAX_BATCH["tiny"],
) -> DiffusionBackend:
    # imported here so an sdxl worker never builds the tiny model
    from workers.tiny_pipeline import build_tiny_sdxl

    _check_device(device)
    pipe = build_tiny_sdxl(seed)
    return _backend(pipe, "tiny", device, _tiny_model_id(pipe, seed), levels, default_steps, max_batch)


def load_sdxl(
    model_dir: str,
    device: str,
    *,
    levels: tuple[int, ...] = DEFAULT_LEVELS,
    default_steps: int = DEFAULT_STEPS,
    max_batch: int = BACKEND_MAX_BATCH["sdxl"],
) -> DiffusionBackend:
    """Loads SD-XL from a local diffusers checkpoint directory, never the hub."""
    problem = sdxl_model_problem(model_dir)
    if problem:
        raise FileNotFoundError(problem)
    _check_device(device)
    if notice := sdxl_scheduler_notice(model_dir):
        log.warning("%s", notice)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    # a folder whose files pass the checks may still not load (a config of wrong values, a tokenizer that is not
    # one, weights of other shapes); identified before the load: what loads is what was read
    with loading(model_dir, "an SD-XL pipeline"):
        identity = folder_model_id(model_dir)
        # loaded here, as the pipeline would (its dtype, each part's variant), to see what their weights lack: a file
        # of no tensors of the part loaded without error, random text encoders, a UNet and a VAE of no values
        parts = {
            name: load_pretrained(
                model_class, model_dir, name, variant=sdxl_part_variant(model_dir, name), **{keyword: dtype}
            )
            for name, model_class, keyword in _WEIGHTED_PARTS
        }
        # the dtype and variant still reach what else a folder's model_index.json names (an image_encoder)
        pipe = StableDiffusionXLPipeline.from_pretrained(
            model_dir,
            local_files_only=True,
            variant=sdxl_weights_variant(model_dir),
            **{_DTYPE_KEYWORD: dtype},
            **parts,
        )
    try:
        return _backend(pipe, "sdxl", device, identity, levels, default_steps, max_batch)
    except ValueError as error:  # a scheduler refused, parts that do not fit: on any device, so none is named
        raise BackendUnavailable(f"--model {model_dir} cannot serve: {error}") from None
    except RuntimeError as error:  # out of memory, a device error
        raise BackendUnavailable(f"--model {model_dir} cannot serve on {device}: {error}") from None


def _check_device(device: str) -> None:
    """Before the model loads (minutes, for SD-XL from a slow disk): a device this host lacks failed only after."""
    if problem := device_problem(device):
        raise BackendUnavailable(f"--device {device}: {problem}")


def _tiny_model_id(pipe: StableDiffusionXLPipeline, seed: int) -> str:
    """The tiny model is its seeded configs: the seed, each component's config and the tokenizers' vocabulary."""
    parts = [str(seed).encode()]
    for name, component in sorted(pipe.components.items()):
        if component is None:
            continue
        config = getattr(component, "config", None)
        if config is None:
            config = component.get_vocab()  # a tokenizer
        elif not isinstance(config, Mapping):
            config = config.to_dict()  # transformers' configs
        parts += [name.encode(), config_bytes(config)]
    return model_id("tiny", parts)


def _backend(
    pipe: StableDiffusionXLPipeline,
    name: str,
    device: str,
    identity: str,
    levels: tuple[int, ...],
    default_steps: int,
    max_batch: int,
) -> DiffusionBackend:
    sizes = BACKEND_SIZES[name]
    return DiffusionBackend(
        pipe,
        name,
        device,
        identity,
        levels=levels,
        default_steps=default_steps,
        max_batch=max_batch,
        min_size=sizes.min_size,
        max_size=sizes.max_size,
        default_size=sizes.default_size,
    )
