"""A randomly initialised, SD-XL-shaped pipeline small enough for a CPU.

Same component types and wiring as SD-XL (two CLIP text encoders, a text_time
UNet, an 8x VAE, Euler sampling), so every code path of the real backend runs;
only the widths are tiny. Nothing is downloaded: weights come from a seeded RNG,
so every process that calls `build_tiny_sdxl(seed)` holds identical weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"
_SUFFIX = "</w>"  # CLIP's end-of-word marker

# Whole-word merges for common prompt words, so typical prompts take a
# realistic number of tokens instead of one per byte.
_WORDS = (
    "a an the of in on at with and by for to from photo photograph painting "
    "portrait landscape city street night sunset sky cat dog man woman girl "
    "boy house tree forest mountain river sea beach car red blue green white "
    "black golden light dark style art digital oil detailed highly realistic "
    "cinematic lighting hd sharp focus trending artstation concept "
    "fantasy futuristic old young beautiful"
).split()

_TEXT_WIDTHS = (48, 64)  # hidden sizes of text_encoder and text_encoder_2
_PROJECTION_DIM = 64
_TIME_EMBED_DIM = 16


def build_tiny_sdxl(seed: int = 0) -> StableDiffusionXLPipeline:
    tokenizer = _build_tokenizer()
    # fork_rng keeps the caller's global RNG untouched by weight init
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(_text_config(tokenizer, _TEXT_WIDTHS[0]))
        text_encoder_2 = CLIPTextModelWithProjection(
            _text_config(tokenizer, _TEXT_WIDTHS[1], projection_dim=_PROJECTION_DIM)
        )
        unet = _build_unet()
        vae = _build_vae()
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=_build_scheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to("cpu")


def _build_tokenizer(words: Iterable[str] = _WORDS) -> CLIPTokenizer:
    """Byte-level BPE: every byte is a token, so any unicode text encodes; each of `words` is one token too."""
    alphabet = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for symbol in alphabet + [c + _SUFFIX for c in alphabet]:
        vocab[symbol] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in words:
        # merge left to right: ((a b) c</w>), sharing prefixes between words
        prefix = word[0] if len(word) > 1 else word[0] + _SUFFIX
        for i, char in enumerate(word[1:], start=1):
            piece = char + _SUFFIX if i == len(word) - 1 else char
            merged = prefix + piece
            if merged not in vocab:
                merges.append((prefix, piece))
                vocab[merged] = len(vocab)
            prefix = merged
    vocab[_BOS] = len(vocab)
    vocab[_EOS] = len(vocab)
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=_EOS,
        bos_token=_BOS,
        eos_token=_EOS,
        pad_token=_EOS,
        model_max_length=77,
    )


def _text_config(tokenizer: CLIPTokenizer, width: int, **extra: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=3,  # SD-XL reads the penultimate layer
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _build_unet() -> UNet2DConditionModel:
    # SD-XL's layout (no attention at full latent resolution, deeper
    # transformers further down) at a fraction of the width
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 128),
        layers_per_block=2,
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 8),  # head counts, as in SD-XL's config
        use_linear_projection=True,
        cross_attention_dim=sum(_TEXT_WIDTHS),
        addition_embed_type="text_time",
        addition_time_embed_dim=_TIME_EMBED_DIM,
        # six micro-conditioning ids (original size, crop, target size)
        projection_class_embeddings_input_dim=6 * _TIME_EMBED_DIM + _PROJECTION_DIM,
        norm_num_groups=32,
    )


def _build_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 64, 64, 64),  # four blocks: scale factor 8
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=0.13025,  # SD-XL's
    )


def _build_scheduler() -> EulerDiscreteScheduler:
    # SD-XL base's scheduler_config.json
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        interpolation_type="linear",
        timestep_spacing="leading",
        steps_offset=1,
        use_karras_sigmas=False,
    )
