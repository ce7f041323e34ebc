"""DiffusionBackend under a scheduler that draws noise at each step (Euler ancestral, DDPM, LCM, as a folder may ship):
each item's step noise comes from its own seed. Before this was pinned, one generator shared by the batch, a fixed
seed or none at all (torch's global RNG) went unnoticed: the tiny model's scheduler (Euler) draws none."""

from __future__ import annotations

import numpy as np
import pytest
from diffusers import DDPMScheduler, EulerAncestralDiscreteScheduler, LCMScheduler, StableDiffusionXLPipeline
from test_diffusion_backend import RecordingControl, batch, decode, diffusers_image, tiny_sizes, with_scheduler

from protocols.worker_messages import GenerateItem, ItemDone
from workers.diffusion_backend import DiffusionBackend
from workers.tiny_pipeline import build_tiny_sdxl

STEPS = 4
LEVEL = 2
PROMPT = "a red cat on a roof"


@pytest.fixture(scope="module")
def ancestral_pipe() -> StableDiffusionXLPipeline:
    return with_scheduler(build_tiny_sdxl(seed=0), EulerAncestralDiscreteScheduler)


@pytest.fixture(scope="module")
def ancestral(ancestral_pipe) -> DiffusionBackend:
    # the template each run's fresh scheduler is made from: the model's own, as load_sdxl takes it from a folder
    return DiffusionBackend(
        ancestral_pipe, "tiny", "cpu", "tiny:test", levels=(LEVEL,), default_steps=STEPS, **tiny_sizes()
    )


def images(backend: DiffusionBackend, level: int, *seeds: int) -> list[np.ndarray]:
    """One batch of an item per seed, all of the same prompt (and, resumed, of the same latent): what differs
    between their images is their seeds' noise."""
    latent = np.random.default_rng(0).standard_normal((4, 8, 8)).astype(np.float16) if level else None
    items = tuple(GenerateItem(f"r{i}", PROMPT, seed, latent) for i, seed in enumerate(seeds))
    outcomes = backend.run(batch(level=level, items=items, steps=STEPS), RecordingControl())
    assert all(isinstance(outcome, ItemDone) for outcome in outcomes), outcomes
    return [np.asarray(decode(outcome.image), dtype=int) for outcome in outcomes]


def alike(one: np.ndarray, other: np.ndarray) -> bool:
    """Equal up to the rounding a batch of another size brings (a pixel's level or so): another seed's noise
    moves pixels by tens of levels, even resumed with a single noisy step left."""
    return int(np.abs(one - other).max()) <= 2


# resumed, a run starts from the latent it is sent, not from its seed's first noise: its step noise alone tells seeds
# apart
@pytest.mark.parametrize("level", [0, LEVEL])
def test_an_image_depends_on_its_own_seed_alone(ancestral, level):
    (seven,) = images(ancestral, level, 7)
    (again,) = images(ancestral, level, 7)
    assert np.array_equal(again, seven)  # not torch's global RNG, which moved on
    (eight,) = images(ancestral, level, 8)
    assert not alike(eight, seven)  # not a seed fixed for every item
    together = images(ancestral, level, 7, 8)
    assert alike(together[0], seven) and alike(together[1], eight)  # not one generator drawing for the whole batch


def test_seeds_two_to_the_32_apart_step_from_different_noise(ancestral):
    """Resumed, the step noise alone tells seeds apart: torch's generator kept a seed's low 32 bits, and 7 + 2**32
    made seed 7's image, pixel for pixel."""
    seven, far = images(ancestral, LEVEL, 7, 7 + 2**32)
    assert not alike(far, seven)


def test_a_seed_below_two_to_the_32_run_in_full_makes_the_image_diffusers_makes_for_it(ancestral_pipe, ancestral):
    """diffusers draws a run's first noise from the generator it then draws each step's noise from. Drawn from a
    generator of its own seeded alike, the first noise was the first step's noise again: that step added the image's
    own noise back, and the image was another."""
    (seven,) = images(ancestral, 0, 7)
    alone = diffusers_image(with_scheduler(ancestral_pipe, EulerAncestralDiscreteScheduler), PROMPT, STEPS, seed=7)
    assert np.array_equal(np.asarray(alone, dtype=int), seven)


# a run long enough for the first resumed step's noise to show: at 4 steps, resumed at 2, the image moved by 2 levels
LONG_STEPS, LONG_LEVEL = 16, 4


@pytest.mark.parametrize("scheduler_class", [EulerAncestralDiscreteScheduler, DDPMScheduler, LCMScheduler])
def test_a_run_resumed_from_its_own_latent_makes_its_full_runs_image(scheduler_class):
    """Resumed at K, a run's step noise is what its run in full draws from step K on. Drawn from a fresh generator,
    the first resumed step drew the seed's first noise again: resumed from a latent its own seed made (a neighbour
    of the same seed, as clients that fix their seed send), that step added the image's own noise back, and the
    image was not its run in full's (Euler ancestral: 6 of 255 levels apart on average, up to 37)."""
    backend = DiffusionBackend(
        with_scheduler(build_tiny_sdxl(seed=0), scheduler_class),
        "tiny",
        "cpu",
        "tiny:test",
        levels=(LONG_LEVEL,),
        default_steps=LONG_STEPS,
        **tiny_sizes(),
    )
    (full,) = long_run(backend, 0, GenerateItem("r", PROMPT, 7))
    (resumed,) = long_run(backend, LONG_LEVEL, GenerateItem("r", PROMPT, 7, full.by_level()[LONG_LEVEL]))
    assert alike(np.asarray(decode(resumed.image), dtype=int), np.asarray(decode(full.image), dtype=int))


def long_run(backend: DiffusionBackend, level: int, *items: GenerateItem) -> list[ItemDone]:
    outcomes = backend.run(batch(level=level, items=items, steps=LONG_STEPS), RecordingControl())
    assert all(isinstance(outcome, ItemDone) for outcome in outcomes), outcomes
    return outcomes
