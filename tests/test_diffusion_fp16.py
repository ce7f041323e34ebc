"""DiffusionBackend in float16, as the sdxl backend loads on CUDA (CPU runs float16 too, slowly: 64x64, 4 steps)."""

from __future__ import annotations

import torch
from test_diffusion_backend import RecordingControl, batch, tiny_sizes

from protocols.worker_messages import ItemDone
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
