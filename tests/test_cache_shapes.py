"""Latents are only reusable within one shape (steps, width, height): lookups never cross shapes."""

from __future__ import annotations

import hnswlib
import numpy as np
import pytest
from cache_room import room

from engine.cache.index import GRAPH_ABOVE
from engine.cache.prompt_cache import PromptCache, ShapeKey

LATENT = np.zeros((4, 8, 8), dtype=np.float16)


def test_lookup_sees_only_its_own_shape():
    cache = PromptCache("hash", 4, (5, 25), max_bytes=1 << 20)
    square, wide, fewer_steps = ShapeKey(50, 1024, 1024), ShapeKey(50, 1280, 768), ShapeKey(30, 1024, 1024)
    vector = np.array([1, 0, 0, 0], dtype=np.float32)
    in_square = cache.insert("a red fox", vector, square, {5: LATENT})
    assert cache.lookup(vector, wide) is None
    assert cache.lookup(vector, fewer_steps) is None
    in_wide = cache.insert("a red fox", vector, wide, {25: LATENT})
    assert in_wide != in_square  # same text, another shape: another entry
    assert cache.lookup(vector, square).prompt_id == in_square
    assert cache.lookup(vector, square).levels == (5,)
    assert cache.lookup(vector, wide).levels == (25,)
    # a nearer prompt in another shape does not hide this shape's neighbour
    cache.insert("a red fox, 4k", np.array([1, 0.01, 0, 0], dtype=np.float32), wide, {5: LATENT})
    assert cache.lookup(np.array([1, 0.01, 0, 0]), square).prompt_id == in_square


def test_an_index_is_kept_only_while_its_shape_has_prompts():
    """Before, each shape ever seen kept its index (about 2.5 MB resident) for good."""
    cache = PromptCache("hash", 4, (5, 25), max_bytes=room(LATENT.nbytes, ["a red fox"], 4, (5, 25)))  # one prompt
    shapes = [ShapeKey(50, 64 * i, 64) for i in range(1, 41)]
    for shape in shapes:
        cache.insert("a red fox", np.array([1, 0, 0, 0], dtype=np.float32), shape, {5: LATENT})
    assert cache.stats().prompts == 1
    assert list(cache._indexes) == [shapes[-1]]


def test_only_a_shape_past_graph_above_holds_an_hnswlib_index(monkeypatch):
    """Before, every cached shape had an hnswlib index, about 2.5 MB resident even for one prompt."""
    made = []
    real_index = hnswlib.Index

    def counted(*args, **kwargs):
        made.append(real_index(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(hnswlib, "Index", counted)
    tiny = np.zeros(1, dtype=np.float16)
    cache = PromptCache("hash", 8, (5, 25), max_bytes=1 << 30)
    rng = np.random.default_rng(0)
    for i in range(100):
        for text in ("a red fox", "a blue fox"):
            cache.insert(text, rng.standard_normal(8), ShapeKey(50, 64 * (i + 1), 64), {5: tiny})
    busy = ShapeKey(30, 512, 512)
    for i in range(GRAPH_ABOVE):
        cache.insert(f"prompt {i}", rng.standard_normal(8), busy, {5: tiny})
    assert cache.stats().prompts == 200 + GRAPH_ABOVE and made == []
    cache.insert("one more", rng.standard_normal(8), busy, {5: tiny})
    assert len(made) == 1


def test_a_burst_in_many_shapes_is_grouped_in_one_pass():
    """Before, each cached shape scanned the whole batch: 4,096 requests in as many cached shapes took 3.4 s of the
    cache thread (0.12 s grouped). Counted in comparisons of shapes, not in time."""
    compared = 0

    class CountedShape(ShapeKey):
        __slots__ = ()

        def __eq__(self, other):
            nonlocal compared
            compared += 1
            return super().__eq__(other)

        __hash__ = ShapeKey.__hash__

    cache = PromptCache("hash", 4, (5,), max_bytes=1 << 20)
    shapes = [CountedShape(50, 64 + 8 * i, 64) for i in range(200)]
    for i, shape in enumerate(shapes):
        cache.insert(f"prompt {i}", np.eye(4, dtype=np.float32)[i % 4], shape, {5: LATENT})
    compared = 0
    found = cache.lookup_many(np.eye(4, dtype=np.float32)[[i % 4 for i in range(200)]], shapes)
    assert [n.prompt for n in found] == [f"prompt {i}" for i in range(200)]
    assert compared <= 2 * len(shapes)  # a scan per shape: 40,000


def test_an_embedding_that_is_not_finite_is_similar_to_nothing_and_leaves_no_index():
    """A broken model's embedding (NaN, inf) was compared with every prompt, and the first was its neighbour at
    similarity NaN, reported as the request's; cached, it was refused after its shape's index was made, which then
    stayed, empty, for good (one a shape)."""
    cache = PromptCache("hash", 4, (5, 25), max_bytes=1 << 20)
    square, wide = ShapeKey(50, 64, 64), ShapeKey(50, 128, 64)
    cache.insert("a red fox", np.array([1, 0, 0, 0], dtype=np.float32), square, {5: LATENT})
    for bad in (np.full(4, np.nan), np.array([np.inf, 0, 0, 0])):
        assert cache.lookup(bad, square) is None
        assert cache.lookup_many(np.stack([bad, [1, 0, 0, 0]]), [square, square])[0] is None
        with pytest.raises(ValueError):
            cache.insert("noise", bad, wide, {5: LATENT})
    assert list(cache._indexes) == [square]
    assert cache.lookup(np.array([1, 0, 0, 0]), square).similarity == 1.0


def test_a_prompt_held_in_its_shape_is_its_own_neighbour_without_being_embedded():
    """Embedding and searching for a prompt the cache holds were most of the cache thread's time a request, with the
    GIL held (every request of `argus bench engine` repeats its one prompt). Held in another shape only, it is
    embedded and searched for as any other prompt."""
    cache = PromptCache("hash", 4, (5, 25), max_bytes=1 << 20)
    square, wide = ShapeKey(50, 64, 64), ShapeKey(50, 128, 64)
    held = cache.insert("a red fox", np.array([2, 0, 0, 0], dtype=np.float32), square, {5: LATENT, 25: LATENT})
    near = {"a red fox": np.float32([1, 0.1, 0, 0]), "a red cat": np.float32([0.9, 0.4, 0, 0])}
    embedded: list[list[str]] = []

    def embed(prompts: list[str]) -> np.ndarray:
        embedded.append(prompts)
        return np.stack([near[prompt] for prompt in prompts])

    prompts = ["a red fox", "a red cat", "a red fox", "a red fox"]
    vectors, found = cache.find_many(prompts, [square, square, square, wide], embed)
    assert embedded == [["a red cat", "a red fox"]]  # the held prompt in its shape is not asked for
    assert found[0] == found[2] == (held, "a red fox", 1.0, (5, 25))
    assert np.array_equal(vectors[0], [1, 0, 0, 0]) and np.array_equal(vectors[2], [1, 0, 0, 0])  # stored, unit
    assert found[1].prompt_id == held and found[1].similarity < 1  # the others: embedded, and searched for
    assert np.array_equal(vectors[1], near["a red cat"])
    assert found[3] is None and np.array_equal(vectors[3], near["a red fox"])  # nothing cached in that shape
    assert cache.find_many([], [], embed) == ([], []) and len(embedded) == 1
