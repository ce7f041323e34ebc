"""An image the model makes of NaN values (a float16 VAE or UNet that overflowed, weights spoilt where no check of the
folder looks) is a failed item, not a black image answered as made.

Before, numpy cast the NaN to 0 as the image was made ("RuntimeWarning: invalid value encountered in cast", printed
to the worker's standard error outside its log), and the client got a 200 with an all-black picture and an
estimated quality of 100; the engine never heard of it, and went on sending the worker its share of the requests.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator

import pytest
import torch
from run_controls import NoControl

from protocols.worker_messages import Generate, GenerateItem, ItemDone, ItemFailed
from workers.diffusion_backend import DiffusionBackend
from workers.limits import BACKEND_SIZES
from workers.tiny_pipeline import build_tiny_sdxl

STEPS = 8
LEVEL = 4
TINY = BACKEND_SIZES["tiny"]


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_sdxl(seed=0)


@pytest.fixture(scope="module")
def backend(pipe) -> DiffusionBackend:
    sizes = {"min_size": TINY.min_size, "max_size": TINY.max_size, "default_size": TINY.default_size}
    return DiffusionBackend(pipe, "tiny", "cpu", "tiny:test", levels=(LEVEL,), default_steps=STEPS, **sizes)


@pytest.fixture
def first_decoded_as_nan(pipe) -> Iterator[None]:
    """The VAE decodes the batch's first image to NaN, as a float16 one that overflowed does."""

    def spoil(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[0] = float("nan")
        return output

    handle = pipe.vae.decoder.register_forward_hook(spoil)
    yield
    handle.remove()


def generate(level: int, items: list[GenerateItem]) -> Generate:
    return Generate(
        batch_id=1, level=level, steps=STEPS, width=64, height=64, guidance_scale=5.0, output_format="png", items=items
    )


@pytest.fixture(scope="module")
def latent(backend) -> object:
    (done,) = backend.run(generate(0, [GenerateItem("seed-run", "a red cat on a roof", 7)]), NoControl())
    return done.by_level()[LEVEL]


@pytest.mark.parametrize("level", [0, LEVEL])
def test_an_image_of_nan_fails_alone_and_its_batch_mate_is_made(backend, latent, first_decoded_as_nan, level):
    start = latent if level else None
    items = [GenerateItem("spoilt", "a red cat", 1, start), GenerateItem("fine", "a blue dog", 2, start)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no NaN is cast to a pixel
        failed, done = backend.run(generate(level, items), NoControl())
    assert isinstance(failed, ItemFailed) and failed.request_id == "spoilt"
    assert failed.code == "worker_error"  # the worker's fault: counted towards taking it out of rotation
    assert re.search(r"NaN or infinite values.*float16", failed.message)
    assert isinstance(done, ItemDone) and done.request_id == "fine" and done.steps_run == STEPS - level
