"""The noise a worker starts a run from (workers/seed_noise.py) against diffusers' own draw."""

import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from workers.seed_noise import first_noise


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 9, 9)])
def test_a_seed_below_two_to_the_32_draws_what_diffusers_draws_in_the_runs_dtype(dtype, shape):
    """float16 noise is not float32's rounded at every shape (4 x 9 x 9: a 72x72 image's latent): drawn in float32 and
    cast, a float16 worker's images at such sizes were not diffusers' for the same seeds."""
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in (7, 2**32 - 1)]
    expected = randn_tensor((2, *shape), generator=generators, dtype=dtype)
    drawn = first_noise([7, 2**32 - 1], shape, dtype)
    assert drawn.dtype == dtype and torch.equal(drawn, expected)


def test_seeds_past_two_to_the_32_draw_from_every_bit():
    low, high = first_noise([7, 7 + 2**32], (4, 8, 8), torch.float16)
    assert not torch.equal(low, high)
    assert torch.equal(high, first_noise([7 + 2**32], (4, 8, 8), torch.float16)[0])
