"""The noise a seed starts an image from (workers/seed_noise.py), in-process: each image of a batch its own seed's,
torch's for a seed below 2**32 (as diffusers drew it), every bit of a larger one taken, and the same in each
release (a seed names an image)."""

from __future__ import annotations

import torch

from workers.seed_noise import first_noise

SHAPE = (4, 2, 2)


def torchs(seed: int) -> torch.Tensor:
    return torch.randn((1, *SHAPE), generator=torch.Generator("cpu").manual_seed(seed))


def test_each_image_of_a_batch_starts_from_its_own_seeds_noise():
    seeds = [5, 6, 2**40]
    batch = first_noise(seeds, SHAPE)
    assert batch.shape == (3, *SHAPE) and batch.dtype == torch.float32
    for row, seed in zip(batch, seeds, strict=True):
        assert torch.equal(row, first_noise([seed], SHAPE)[0])
    assert not torch.equal(batch[0], batch[1])


def test_a_seed_below_two_to_the_32_draws_torchs_noise_for_it():
    for seed in (0, 2**31, 2**32 - 1):
        assert torch.equal(first_noise([seed], SHAPE), torchs(seed))


def test_seeds_two_to_the_32_apart_draw_different_noise():
    # torch's generator keeps the low 32 bits: seeded with 2**32, it draws seed 0's noise
    for low in (0, 7):
        assert not torch.equal(first_noise([low + 2**32], SHAPE), first_noise([low], SHAPE))


def test_a_seed_above_two_to_the_32_draws_the_same_noise_in_each_release():
    """A seed named in a request makes the same image in each release: the draw (numpy's PCG64, in float32) is kept."""
    drawn = first_noise([2**32 + 7], SHAPE).flatten()[:4].tolist()
    assert drawn == [1.876121997833252, -0.5396082997322083, -2.2867820262908936, -0.18183915317058563]
