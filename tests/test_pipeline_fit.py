"""workers/pipeline_fit.py on SD-XL base's own configs, without a model: a UNet may give its cross-attention width per
block (diffusers takes a list), and each block must fit the text encoders. tests/test_sdxl_model_folder.py loads
folders whose parts do not fit."""

from __future__ import annotations

from types import SimpleNamespace

from workers.pipeline_fit import pipeline_misfit


def sdxl_base(cross_attention_dim: int | list[int] = 2048) -> SimpleNamespace:
    """A pipeline of SD-XL base's configs: what pipeline_misfit reads of it."""

    def part(**config: object) -> SimpleNamespace:
        return SimpleNamespace(config=SimpleNamespace(**config))

    return SimpleNamespace(
        tokenizer=SimpleNamespace(model_max_length=77),
        tokenizer_2=SimpleNamespace(model_max_length=77),
        text_encoder=part(max_position_embeddings=77, hidden_size=768),
        text_encoder_2=part(max_position_embeddings=77, hidden_size=1280, projection_dim=1280),
        unet=part(
            cross_attention_dim=cross_attention_dim,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
            in_channels=4,
            out_channels=4,
        ),
        vae=part(latent_channels=4),
    )


def test_sdxl_base_fits_with_its_cross_attention_width_given_once_or_per_block():
    assert pipeline_misfit(sdxl_base()) is None
    assert pipeline_misfit(sdxl_base([2048, 2048, 2048])) is None


def test_a_unet_block_attending_to_text_of_another_width_is_refused():
    assert pipeline_misfit(sdxl_base([2048, 2048, 1024])) == (
        "its unet attends to text of [2048, 2048, 1024] values a token (cross_attention_dim), and its text encoders"
        " give 2048 (text_encoder 768 + text_encoder_2 1280)"
    )
