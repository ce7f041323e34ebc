"""Whether the parts of a loaded SD-XL pipeline fit one another.

Each part of a model folder may load on its own, and the pipeline still not run: a text encoder of another model's
width, a second text encoder of another projection, a UNet without SD-XL's size conditioning, a VAE of 16 latent
channels (SD 3's, Flux's), a tokenizer_config.json that sets no model_max_length (transformers reads it as no limit,
and pads every prompt to 10^30 tokens). Such a folder loaded, its worker said hello, and every batch the engine sent
it failed (`mat1 and mat2 shapes cannot be multiplied`, `int too big to convert`, ...): 500 `worker_error` for each
request, for as long as it ran, where its configs already said it could not run. Read from the loaded parts' configs,
as the pipeline reads them: microseconds.
"""

from __future__ import annotations

from typing import Any

# transformers' model_max_length for a tokenizer that sets none (tokenization_utils_base.VERY_LARGE_INTEGER, 1e30)
_NO_LIMIT = 10**20
# SD-XL's size conditioning: original size, crop corner, target size (two numbers each), each embedded apart
_SIZE_IDS = 6


def pipeline_misfit(pipe: Any) -> str | None:
    """Why the parts of `pipe` (a StableDiffusionXLPipeline) cannot run together, or None."""
    return _prompt_length_misfit(pipe) or _text_misfit(pipe) or _latent_misfit(pipe)


def _prompt_length_misfit(pipe: Any) -> str | None:
    """Every prompt is padded to its tokenizer's length: its text encoder must have a position for each token."""
    for tokenizer, encoder in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        length = getattr(pipe, tokenizer).model_max_length
        positions = getattr(pipe, encoder).config.max_position_embeddings
        if length >= _NO_LIMIT:
            return (
                f"its {tokenizer}/tokenizer_config.json sets no model_max_length (no limit, to transformers), and its"
                f" {encoder} has {positions} positions: set it to {positions}"
            )
        if length > positions:
            return (
                f"its {tokenizer} pads prompts to {length} tokens (model_max_length), and its {encoder} has"
                f" {positions} positions"
            )
    return None


def _text_misfit(pipe: Any) -> str | None:
    """SD-XL's UNet attends to both text encoders' hidden states side by side, and takes the second one's pooled
    projection with the size conditioning."""
    unet, first, second = pipe.unet.config, pipe.text_encoder.config, pipe.text_encoder_2.config
    width = first.hidden_size + second.hidden_size
    attends = unet.cross_attention_dim
    if any(dim != width for dim in (attends if isinstance(attends, (list, tuple)) else [attends])):
        return (
            f"its unet attends to text of {attends} values a token (cross_attention_dim), and its text encoders give"
            f" {width} (text_encoder {first.hidden_size} + text_encoder_2 {second.hidden_size})"
        )
    if unet.addition_embed_type != "text_time":
        return f"its unet takes no SD-XL size conditioning (addition_embed_type {unet.addition_embed_type!r})"
    takes, each = unet.projection_class_embeddings_input_dim, unet.addition_time_embed_dim
    given = _SIZE_IDS * each + second.projection_dim
    if given != takes:
        return (
            f"its unet takes {takes} values of size conditioning and pooled text"
            f" (projection_class_embeddings_input_dim), and the pipeline gives {given} ({_SIZE_IDS} size ids of"
            f" {each} + text_encoder_2's projection_dim {second.projection_dim})"
        )
    return None


def _latent_misfit(pipe: Any) -> str | None:
    unet = pipe.unet.config
    made = {"its vae makes": pipe.vae.config.latent_channels, "its unet gives": unet.out_channels}
    if any(channels != unet.in_channels for channels in made.values()):
        said = ", ".join(f"{whose} {channels}" for whose, channels in made.items())
        return f"its unet takes latents of {unet.in_channels} channels; {said}"
    return None
