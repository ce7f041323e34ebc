"""What diffusers and transformers log that names nothing wrong in argus, kept out of a worker's log.

- A prompt past CLIP's 77 tokens: SD-XL cuts every prompt there. Diffusers logs the rest of each longer prompt at
  WARNING, once per text encoder: users' words, up to 4,000 characters a prompt, in a shared log, for a routine
  event (many prompts run past 77 tokens). Transformers, as diffusers tokenizes the whole prompt to find that rest,
  warns once per tokenizer that it "will result in indexing errors", which the cut prevents.
- transformers 5, as diffusers imports it, says its CLIP and SigLIP image processors fall back to PIL without
  torchvision: two lines at every worker's start for what argus never runs (text-to-image uses no image
  processor), so a user would look for a fault that is not there.
- A part whose weights are a .bin (diffusion_pytorch_model.bin, as `save_pretrained(safe_serialization=False)` and
  older checkpoints write them): diffusers looks for a .safetensors first and logs its absence at ERROR, "An error
  occurred while trying to fetch DIR/unet: Error no file named diffusion_pytorch_model.safetensors", before it
  loads the .bin, at every worker's start. A .bin it then cannot load still fails the load, saying why.

Every other message of these loggers still shows. Installed as the `workers` package is imported, before any
worker module imports diffusers: the image processors' notice comes with the import.
"""

from __future__ import annotations

import logging

_TRUNCATED = "The following part of your input was truncated"
# logger -> what its notices start with or hold
_NOTICES = {
    "diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl": _TRUNCATED,
    "diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img": _TRUNCATED,
    "transformers.tokenization_utils_base": "Token indices sequence length is longer",
    "transformers.utils.import_utils": "requires torchvision (not installed)",
    "diffusers.models.modeling_utils": "An error occurred while trying to fetch",
}


def drop_library_notices() -> None:
    for logger, notice in _NOTICES.items():
        logging.getLogger(logger).addFilter(lambda record, notice=notice: notice not in record.getMessage())
