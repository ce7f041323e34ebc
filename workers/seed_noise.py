"""The noise a seed starts an image from, drawn on the CPU whatever the device.

torch's CPU generator (mt19937) keeps only the low 32 bits of the seed it is given: seeds 7 and 7 + 2**32 drew the
same noise and made the same image, so of the 2**63 seeds a request may name, 2**32 made different images (and a
seedless request's random seed was as likely to repeat another's as if drawn from 2**32). A seed below 2**32 still
draws from torch's generator, as diffusers did with it, and makes the image it made; one above draws from numpy's
PCG64, which takes every bit of its seed.
"""

from __future__ import annotations

import numpy as np
import torch

_TORCH_SEEDS = 2**32  # the seeds torch's CPU generator tells apart


def first_noise(seeds: list[int], shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Noise of `shape` (one latent's) in `dtype` (the run's) for each seed, stacked as a batch, on the CPU."""
    return torch.cat([_noise(seed, (1, *shape), dtype) for seed in seeds])


def _noise(seed: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if seed < _TORCH_SEEDS:
        # drawn in the run's dtype, as diffusers draws it: float16 noise is not float32's rounded at every shape (4 x
        # 9 x 9, a 72x72 image's latent, is drawn another way), and a float16 worker's images would have changed
        return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=dtype)
    drawn = np.random.Generator(np.random.PCG64(seed)).standard_normal(shape, dtype=np.float32)
    return torch.from_numpy(drawn).to(dtype)
