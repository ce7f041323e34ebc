"""The noise a seed starts an image from (workers/seed_noise.py), in-process: each image of a batch its own seed's,
what diffusers draws for a seed below 2**32 (torch's generator, in the run's dtype), every bit of a larger one taken,
and the same in each release (a seed names an image)."""

from __future__ import annotations

import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from workers.seed_noise import first_noise, step_generator

SHAPE = (4, 2, 2)


def _noise(seeds: list[int], shape: tuple[int, ...] = SHAPE, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return first_noise(seeds, [step_generator(seed) for seed in seeds], shape, dtype)


def test_each_image_of_a_batch_starts_from_its_own_seeds_noise():
    seeds = [5, 6, 2**40]
    batch = _noise(seeds)
    assert batch.shape == (3, *SHAPE) and batch.dtype == torch.float32
    for row, seed in zip(batch, seeds, strict=True):
        assert torch.equal(row, _noise([seed])[0])
    assert not torch.equal(batch[0], batch[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 9, 9)])
def test_a_seed_below_two_to_the_32_draws_what_diffusers_draws_in_the_runs_dtype(dtype, shape):
    """float16 noise is not float32's rounded at every shape (4 x 9 x 9: a 72x72 image's latent): drawn in float32 and
    cast, a float16 worker's images at such sizes were not diffusers' for the same seeds."""
    seeds = (0, 7, 2**31, 2**32 - 1)
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    expected = randn_tensor((len(seeds), *shape), generator=generators, dtype=dtype)
    drawn = _noise(list(seeds), shape, dtype)
    assert drawn.dtype == dtype and torch.equal(drawn, expected)


def test_seeds_two_to_the_32_apart_draw_different_noise():
    # torch's generator keeps the low 32 bits: seeded with 2**32, it draws seed 0's noise
    for low in (0, 7):
        assert not torch.equal(_noise([low + 2**32]), _noise([low]))


def test_a_seed_above_two_to_the_32_draws_the_same_noise_in_each_release():
    """A seed named in a request makes the same image in each release: the draw (numpy's PCG64, in float32) is kept,
    and cast to the run's dtype."""
    drawn = _noise([2**32 + 7]).flatten()[:4].tolist()
    assert drawn == [1.876121997833252, -0.5396082997322083, -2.2867820262908936, -0.18183915317058563]
    assert torch.equal(_noise([2**32 + 7], dtype=torch.float16), _noise([2**32 + 7]).to(torch.float16))


def test_a_seeds_step_noise_is_drawn_from_the_same_generator_in_each_release():
    """A seed below 2**32 seeds torch's generator itself, as diffusers does; one above, a digest of all its bits
    (numpy's SeedSequence, kept: a seed names an image, under a scheduler that draws noise at each step too)."""
    assert step_generator(7).initial_seed() == 7
    assert step_generator(2**32 + 7).initial_seed() == 369571992
