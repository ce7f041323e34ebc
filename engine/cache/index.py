"""Nearest-prompt search: an hnswlib HNSW graph over prompt embeddings, cosine similarity.

Ids are the prompt cache's prompt ids. Removal marks the id deleted; its slot
is reused by a later insert (allow_replace_deleted), so a cache that churns at a
steady size keeps a steady index. The graph grows by doubling when every slot
holds a live prompt.

The parameters were chosen with 100k vectors of 1024 dimensions (`argus bench
cache`, numbers in docs/cache.md). They need a denser graph than hnswlib's default
M = 16: on hash-embedded synthetic prompts, M = 24 with ef_construction = 100 finds
the exact nearest prompt for 86-88% of near-duplicate queries at ef = 24-32 (84-86%
at M = 16), and on random unit vectors, the hard case, 62-70% (38-46% at M = 16).
ef = 24 rather than 32 trades two points of that recall for a quarter of the
lookup time, to keep the p99 near 1 ms even on random vectors.
Not thread-safe: owned by the prompt cache's thread.
"""

from __future__ import annotations

import hnswlib
import numpy as np

EF_SEARCH = 24
M = 24
EF_CONSTRUCTION = 100


class VectorIndex:
    # small to start: one index per shape cached, and many shapes hold a prompt or two (hnswlib's own
    # fixed cost, about 2.5 MB of label locks, is there whatever the capacity)
    def __init__(self, dim: int, capacity: int = 16):
        self.dim = dim
        self._index = hnswlib.Index(space="cosine", dim=dim)
        self._index.init_index(
            max_elements=max(1, capacity), M=M, ef_construction=EF_CONSTRUCTION, allow_replace_deleted=True
        )
        self._index.set_ef(EF_SEARCH)
        self._live: set[int] = set()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, item_id: int) -> bool:
        return item_id in self._live

    def add(self, item_id: int, vector: np.ndarray) -> None:
        self.add_many([item_id], vector.reshape(1, -1))

    def add_many(self, ids: list[int], vectors: np.ndarray) -> None:
        """Inserts rows in one call (hnswlib spreads a batch over threads)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(ids) != len(vectors) or len(set(ids)) != len(ids) or self._live.intersection(ids):
            raise ValueError("ids must be new, unique and one per vector")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors must be finite")
        needed = len(self._live) + len(ids)
        capacity = self._index.get_max_elements()
        if needed > capacity:
            while capacity < needed:
                capacity *= 2
            self._index.resize_index(capacity)
        # one thread for a single vector: waking a thread pool costs more than the insert
        self._index.add_items(vectors, ids, num_threads=1 if len(ids) == 1 else -1, replace_deleted=True)
        self._live.update(ids)

    def remove(self, item_id: int) -> None:
        self._index.mark_deleted(item_id)
        self._live.remove(item_id)

    def nearest(self, vector: np.ndarray) -> tuple[int, float] | None:
        """(id, cosine similarity) of the closest live vector, or None if the index is empty."""
        return self.nearest_many(np.reshape(vector, (1, -1)))[0]

    def nearest_many(self, vectors: np.ndarray) -> list[tuple[int, float] | None]:
        """`nearest` for each row, in one query (one call into hnswlib for a burst of prompts)."""
        if not self._live:
            return [None] * len(vectors)
        queries = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        labels, distances = self._index.knn_query(queries, k=1, num_threads=1)
        # rounding can put an exact repeat a hair above 1
        similarities = np.minimum(1.0, 1.0 - distances[:, 0])
        return list(zip(labels[:, 0].tolist(), similarities.tolist(), strict=True))

    def vectors(self, ids: list[int]) -> np.ndarray:
        """The stored (unit-length) vectors of these ids, float32 [len(ids), dim]."""
        if not ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._index.get_items(ids, return_type="numpy"), dtype=np.float32)
