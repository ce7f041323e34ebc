"""Real tiny transformers models, saved as the loaders read them (save_pretrained): a CLIP text encoder with its
projection and tokenizer (`--embedder clip`), a BERT and its word-piece tokenizer (`--embedder minilm`), a whole CLIP
and its processor (`argus profile quality --clip`). Random weights, seeded; a few hundred KB each."""

from __future__ import annotations

from collections.abc import Callable

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizer,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextModelWithProjection,
)

from workers.tiny_pipeline import _build_tokenizer, _text_config

CLIP_TEXT_DIM = 24  # the tiny CLIP text encoder's projection: the clip embedder's width
_BERT_WORDS = "a the lighthouse on cliff at dusk night red fox blue whale green frog oil painting".split()


def save_tiny_clip_text(directory, seed: int = 0) -> None:
    """`seed`: another seed is another model of the same width."""
    tokenizer = _build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPTextModelWithProjection(_text_config(tokenizer, 32, projection_dim=CLIP_TEXT_DIM))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def save_tiny_bert(directory, pooler: bool = True) -> None:
    """A BertModel, with its pooler as all-MiniLM-L6-v2's folder holds one, or without (a sentence encoder's own
    saving may leave it out: what it computes is pooled by the mean)."""
    vocab = {token: n for n, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_BERT_WORDS])}
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(config, add_pooling_layer=pooler).save_pretrained(directory)
    BertTokenizer(vocab=vocab).save_pretrained(directory)


def save_tiny_clip(directory) -> None:
    """A random CLIP (text and vision towers, 32 px images), saved as a local model directory.

    A random CLIP scores image-text pairs near 0 on either side, and a pair at or
    below 0 has no relative quality. Both towers' last layer norms share a large
    bias and both projections the same weights, so every embedding leans the same
    way: every score is positive, and still differs from image to image.
    """
    tokenizer = _build_tokenizer()
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
        shared_bias = 3.0 * torch.randn(32)
    with torch.no_grad():
        model.visual_projection.weight.copy_(model.text_projection.weight)
        for norm in (model.vision_model.post_layernorm, model.text_model.final_layer_norm):
            norm.weight.fill_(0.5)
            norm.bias.copy_(shared_bias)
    model.save_pretrained(directory)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(directory)


def keep_weights(path, keep: Callable[[str], bool]) -> None:
    """Rewrites the safetensors file `path` with only the tensors whose names `keep` accepts."""
    save_file({name: tensor for name, tensor in load_file(path).items() if keep(name)}, path)


def empty_weights(path) -> None:
    """Leaves the safetensors file `path` a valid one of no tensors."""
    keep_weights(path, lambda name: False)
