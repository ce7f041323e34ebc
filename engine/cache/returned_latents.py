"""The latents a worker's image brings back, checked before the prompt cache keeps them."""

from __future__ import annotations

from engine.cache.latent_store import check_latent
from protocols.worker_messages import ItemDone


def latents_problem(
    done: ItemDone, run_level: int, steps: int, cache_levels: tuple[int, ...], shape: tuple[int, int, int]
) -> str | None:
    """Why the latents `done` brings cannot be what a run from `run_level` of `steps` passed through, or None.

    A worker of another build, or a buggy one, may say anything: a latent of the wrong shape, cached, failed every
    similar prompt resumed from it at the worker that got it (a NaN made a black image, answered as made)."""
    levels, latents = done.latent_levels, done.latents
    if latents is None:
        return f"levels {levels[:8]} named, and no latents"
    if levels != sorted(set(levels)) or not all(run_level < k < steps and k in cache_levels for k in levels):
        return f"levels {levels[:8]}: not cache levels {list(cache_levels)} above {run_level} and below {steps}"
    if latents.shape != (len(levels), *shape):
        return f"latents of shape {latents.shape}, not {(len(levels), *shape)}"
    try:
        check_latent(latents)  # dtype, finite
    except (TypeError, ValueError) as error:
        return str(error)
    return None
