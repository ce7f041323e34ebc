"""The hnswlib index: nearest by cosine similarity, growth past its capacity, removal and slot reuse."""

from __future__ import annotations

import numpy as np
import pytest

from engine.cache.index import VectorIndex


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_nearest_is_the_most_similar_by_cosine():
    vectors = unit_rows(300, 32)
    index = VectorIndex(32, capacity=8)  # grows several times
    for i, v in enumerate(vectors):
        index.add(i + 100, v * (i + 1))  # scale does not matter to cosine
    query = vectors[42] + 0.05 * unit_rows(1, 32, seed=1)[0]
    expected = vectors @ (query / np.linalg.norm(query))
    found, similarity = index.nearest(query)
    assert found == 142
    assert similarity == pytest.approx(expected.max(), abs=1e-5)
    assert len(index) == 300


def test_removed_ids_are_never_returned_and_slots_are_reused():
    vectors = unit_rows(64, 16)
    index = VectorIndex(16, capacity=64)
    index.add_many(list(range(64)), vectors)
    for i in range(0, 64, 2):
        index.remove(i)
    assert all(index.nearest(vectors[i])[0] % 2 == 1 for i in range(64))
    index.add_many(list(range(100, 132)), unit_rows(32, 16, seed=2))  # fills the freed slots
    assert index._index.get_max_elements() == 64 and len(index) == 64
    for i in range(100, 132):
        index.remove(i)
    for i in range(1, 64, 2):
        index.remove(i)
    assert index.nearest(vectors[0]) is None


def test_refuses_reused_ids_and_bad_vectors():
    index = VectorIndex(4)
    index.add(1, np.ones(4))
    with pytest.raises(ValueError):
        index.add(1, np.ones(4))
    with pytest.raises(ValueError):
        index.add(2, np.array([1, np.inf, 0, 0]))
    assert len(index) == 1
    np.testing.assert_allclose(index.vectors([1]), np.full((1, 4), 0.5), atol=1e-6)
