"""The edges of what read_cache_file takes from a file whose checksums hold (anyone can recompute them): ids, sizes,
the header's length. Each refusal is a CacheFileError; each file just inside an edge is read."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from engine.cache import persistence
from engine.cache.persistence import FILE_NAME, CacheFileError, SavedLatent, SavedPrompt

DIM = 4
LEVELS = (5, 10)


def written(tmp_path, prompts: list[SavedPrompt], latents: list[SavedLatent], next_prompt_id: int, vector=1.0):
    """A file of `prompts` (each vector all `vector`) and `latents`, each of zeros."""
    path = tmp_path / FILE_NAME
    arrays = [np.zeros(latent.nbytes, np.uint8) for latent in latents]
    vectors = np.full((len(prompts), DIM), vector, np.float32)
    persistence.write_cache_file(path, "hash", DIM, LEVELS, next_prompt_id, prompts, vectors, latents, arrays, "")
    return path


def read(path) -> persistence.CacheFile:
    return persistence.read_cache_file(path, "hash", DIM, LEVELS, "")


def one_prompt(tmp_path, prompt_id: int, next_prompt_id: int):
    prompt = SavedPrompt(prompt_id, "p", 50, 64, 64)
    return written(tmp_path, [prompt], [SavedLatent(prompt_id, 5, 0, "float16", (8,), 0, 16)], next_prompt_id)


@pytest.mark.parametrize(
    "prompt_id, next_prompt_id",
    [(1, 2), (2**63 - 1, 2**63)],  # the first id, and the last a file may leave 2**63 ids after
    ids=["first", "last"],
)
def test_ids_at_the_edges_of_their_range_are_read(tmp_path, prompt_id, next_prompt_id):
    saved = read(one_prompt(tmp_path, prompt_id, next_prompt_id))
    assert ([p.prompt_id for p in saved.prompts], saved.next_prompt_id) == ([prompt_id], next_prompt_id)


@pytest.mark.parametrize(
    "prompt_id, next_prompt_id, says",
    [
        (0, 2, "prompt ids are not unique"),  # ids start at 1
        (2, 2, "prompt ids are not unique"),  # an id the cache would give again
        (1, 2**63 + 1, "next_prompt_id"),  # fewer than 2**63 ids left below hnswlib's 2**64
    ],
    ids=["zero", "next", "past-the-last"],
)
def test_ids_past_the_edges_of_their_range_are_refused(tmp_path, prompt_id, next_prompt_id, says):
    with pytest.raises(CacheFileError, match=f"inconsistent: {says}"):
        read(one_prompt(tmp_path, prompt_id, next_prompt_id))


def test_bytes_past_what_the_header_describes_are_refused(tmp_path):
    """Appended before a digest recomputed over them: what the meta does not describe is no part of a saved cache."""
    path = one_prompt(tmp_path, 1, 2)
    body = path.read_bytes()[: -persistence._DIGEST_BYTES] + b"extra"
    path.write_bytes(body + hashlib.blake2b(body, digest_size=persistence._DIGEST_BYTES).digest())
    with pytest.raises(CacheFileError, match="its header describes"):
        read(path)


def test_a_header_longer_than_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A damaged length field may name gigabytes: the buffer for it is not made (the limit lowered to a short meta)."""
    path = one_prompt(tmp_path, 1, 2)
    monkeypatch.setattr(persistence, "_MAX_META_BYTES", 16)
    with pytest.raises(CacheFileError, match="its header is cut short"):
        read(path)


def test_a_latent_with_no_elements_is_read_back(tmp_path):
    """Nothing refuses to cache one: what a save wrote, a load takes (a zero dimension is no negative one)."""
    prompt, latent = SavedPrompt(1, "p", 50, 64, 64), SavedLatent(1, 5, 0, "float16", (4, 0), 0, 0)
    assert read(written(tmp_path, [prompt], [latent], 2)).latents == [latent]


def latent(prompt_id: int, level: int = 5, offset: int = 0, uses: int = 0) -> SavedLatent:
    return SavedLatent(prompt_id, level, uses, "float16", (8,), offset, 16)


INCONSISTENT = {  # prompts, latents, each vector's value, what the refusal says
    "an-id-twice": (
        [SavedPrompt(1, "a", 50, 64, 64), SavedPrompt(1, "b", 50, 64, 64)],
        [latent(1)],
        1.0,
        "prompt ids are not unique",
    ),
    "a-prompt-twice": (
        [SavedPrompt(1, "p", 50, 64, 64), SavedPrompt(2, "p", 50, 64, 64)],
        [latent(1), latent(2, offset=16)],
        1.0,
        "a prompt appears twice in one shape",
    ),
    "no-width": ([SavedPrompt(1, "p", 50, 0, 64)], [latent(1)], 1.0, "non-positive shape"),
    "no-steps": ([SavedPrompt(1, "p", 0, 64, 64)], [latent(1)], 1.0, "non-positive shape"),
    "a-nan-vector": ([SavedPrompt(1, "p", 50, 64, 64)], [latent(1)], np.nan, "a vector is not finite"),
    "a-latent-twice": (
        [SavedPrompt(1, "p", 50, 64, 64)],
        [latent(1, offset=0), latent(1, offset=16)],
        1.0,
        "or repeats",
    ),
    "negative-uses": ([SavedPrompt(1, "p", 50, 64, 64)], [latent(1, uses=-1)], 1.0, "uses -1"),
    "a-gap": (
        [SavedPrompt(1, "p", 50, 64, 64)],
        [latent(1, 5, offset=0), latent(1, 10, offset=32)],
        1.0,
        "is not where the previous one ends",
    ),
    "a-prompt-without-latents": (
        [SavedPrompt(1, "p", 50, 64, 64), SavedPrompt(2, "q", 50, 64, 64)],
        [latent(1)],
        1.0,
        "a prompt has no latents",
    ),
}


@pytest.mark.parametrize("case", INCONSISTENT)
def test_a_file_that_contradicts_itself_is_refused(tmp_path, monkeypatch, case):
    """As a buggy or hostile writer could make it; offsets as given, not placed by the writer."""
    prompts, latents, vector, says = INCONSISTENT[case]
    monkeypatch.setattr(persistence, "_placed", lambda latents: latents)
    with pytest.raises(CacheFileError, match=f"inconsistent: .*{says}"):
        read(written(tmp_path, prompts, latents, 3, vector))
