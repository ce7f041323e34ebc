"""The noise a seed starts an image from, drawn on the CPU whatever the device.

torch's CPU generator (mt19937) keeps only the low 32 bits of the seed it is given: seeds 7 and 7 + 2**32 drew the
same noise and made the same image, so of the 2**63 seeds a request may name, 2**32 made different images (and a
seedless request's random seed was as likely to repeat another's as if drawn from 2**32). A seed below 2**32 still
draws from torch's generator, as diffusers did with it, and makes the image it made; one above draws from numpy's
PCG64, which takes every bit of its seed. A scheduler that draws noise at each step (Euler ancestral, DDPM) draws it
from torch's generator all the same (diffusers takes no other): `step_generator` seeds it from every bit of a seed above
2**32, not from its low 32 bits alone; below, the first noise is its first draw, and the steps' noise follows on.
"""

from __future__ import annotations

import numpy as np
import torch

_TORCH_SEEDS = 2**32  # the seeds torch's CPU generator tells apart


def first_noise(
    seeds: list[int], generators: list[torch.Generator], shape: tuple[int, ...], dtype: torch.dtype
) -> torch.Tensor:
    """Noise of `shape` (one latent's) in `dtype` (the run's) for each seed, stacked as a batch, on the CPU.

    `generators`: each seed's step_generator, which a seed below 2**32 draws its noise from, as diffusers draws a run's
    first noise from the generator it then draws each step's from. Drawn from a fresh generator seeded alike, the
    first noise was an ancestral scheduler's first step noise again: that step added the image's own noise back, and
    the image was not the one diffusers makes for the seed."""
    pairs = zip(seeds, generators, strict=True)
    return torch.cat([_noise(seed, generator, (1, *shape), dtype) for seed, generator in pairs])


def _noise(seed: int, generator: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if seed < _TORCH_SEEDS:
        # drawn in the run's dtype, as diffusers draws it: float16 noise is not float32's rounded at every shape (4 x
        # 9 x 9, a 72x72 image's latent, is drawn another way), and a float16 worker's images would have changed
        return torch.randn(shape, generator=generator, dtype=dtype)
    drawn = np.random.Generator(np.random.PCG64(seed)).standard_normal(shape, dtype=np.float32)
    return torch.from_numpy(drawn).to(dtype)


def skip_to_step(
    seeds: list[int], generators: list[torch.Generator], shape: tuple[int, ...], dtype: torch.dtype, steps: int
) -> None:
    """Moves each seed's step_generator past what its run in full draws before step `steps`: its first noise, then
    one step noise a step (Euler ancestral, DDPM, LCM draw one, of the latent's shape in the run's dtype; a scheduler
    that draws none leaves these unused). A run resumed at K then draws the step noise its run in full draws from
    step K on. Drawn from a fresh generator, the first resumed step's noise was the seed's first noise: resumed from
    a latent its own seed made (a neighbour of the same seed, as clients that fix their seed send), that step added
    the image's own noise back into it, and the image was not its run in full's."""
    first_noise(seeds, generators, shape, dtype)
    for generator in generators:
        for _ in range(steps):
            torch.randn((1, *shape), generator=generator, dtype=dtype)


def step_generator(seed: int) -> torch.Generator:
    """The generator an image's step noise is drawn from. A seed below 2**32 seeds it as diffusers did; one above, a
    32-bit digest of all its bits: torch kept the seed's low 32 bits, and seeds 2**32 apart drew the same noise at
    every step, so resumed from one latent under an ancestral scheduler they made one image, pixel for pixel. 2**32
    step-noise draws remain (torch's generator has no more), but which seeds share one is chance, not their low bits."""
    if seed >= _TORCH_SEEDS:
        seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
    return torch.Generator("cpu").manual_seed(seed)
