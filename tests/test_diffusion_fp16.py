"""DiffusionBackend in float16, as the sdxl backend loads on CUDA (CPU runs float16 too, slowly: 64x64, 4 steps)."""

from __future__ import annotations

import numpy as np
import torch
from test_diffusion_backend import RecordingControl, batch, tiny_sizes

from protocols.worker_messages import REFUSED, GenerateItem, ItemDone, ItemFailed
from workers.diffusion_backend import DiffusionBackend
from workers.tiny_pipeline import build_tiny_sdxl

STEPS = 4


def test_a_batch_that_fails_in_the_vae_decode_leaves_the_next_one_running():
    """diffusers runs an SD-XL float16 VAE in float32 for the decode (force_upcast) and casts it back after: an out
    of memory in between left it float32, and every later batch failed ('Input type (c10::Half) and bias type
    (float) should be the same') on a worker that still looked healthy."""
    pipe = build_tiny_sdxl(seed=0).to(torch.float16)
    pipe.vae.register_to_config(force_upcast=True)  # as SD-XL's VAE config says
    backend = DiffusionBackend(pipe, "tiny", "cpu", "tiny:test", levels=(2,), default_steps=STEPS, **tiny_sizes())
    failures = [torch.OutOfMemoryError("CUDA out of memory")]

    def out_of_memory(*_: object) -> None:
        if failures:
            raise failures.pop()

    pipe.vae.decoder.register_forward_pre_hook(out_of_memory)
    try:
        backend.run(batch(steps=STEPS), RecordingControl())
    except torch.OutOfMemoryError:
        pass  # the worker fails this batch's items
    assert not failures
    assert pipe.vae.dtype == torch.float16
    (done,) = backend.run(batch(steps=STEPS), RecordingControl())
    assert isinstance(done, ItemDone)


def test_a_float32_latent_beyond_float16s_range_fails_alone_rather_than_making_a_black_image():
    """Finite as sent, infinite once cast to the float16 UNet's dtype: the run made a black image answered as made."""
    pipe = build_tiny_sdxl(seed=0).to(torch.float16)
    backend = DiffusionBackend(pipe, "tiny", "cpu", "tiny:test", levels=(2,), default_steps=STEPS, **tiny_sizes())
    huge = np.zeros((4, 8, 8), np.float32)
    huge[0, 0, 0] = 1e6
    items = (GenerateItem("huge", "a cat", 1, huge), GenerateItem("good", "a dog", 2, np.zeros((4, 8, 8), np.float16)))
    failed, done = backend.run(batch(level=2, steps=STEPS, items=items), RecordingControl())
    assert isinstance(failed, ItemFailed) and failed.code == REFUSED
    assert failed.message == "huge: the latent holds values beyond the model's range (±65504)"
    assert isinstance(done, ItemDone) and done.steps_run == STEPS - 2
