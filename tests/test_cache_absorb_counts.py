"""absorb() adds every running count of the cache served while the saved one was read: /metrics shows them as
counters, and one that fell at the hand-over reads as an engine restart."""

from __future__ import annotations

import numpy as np

from engine.cache.prompt_cache import PromptCache, ShapeKey

SHAPE = ShapeKey(50, 64, 64)
LATENT = np.zeros((4, 8, 8), dtype=np.float16)  # 512 bytes
LEVELS = (5, 25)


def unit(i: int) -> np.ndarray:
    return np.eye(8, dtype=np.float32)[i]


def test_absorb_adds_the_newer_caches_spills_evictions_hits_and_misses(tmp_path):
    restored = PromptCache("hash", 8, LEVELS, max_bytes=1 << 20)
    newer = PromptCache("hash", 8, LEVELS, max_bytes=512, spill_dir=str(tmp_path), spill_bytes=512)
    try:
        for i in range(3):  # memory holds one, the spill folder one: two spills, one eviction
            newer.insert(f"prompt {i}", unit(i), SHAPE, {5: LATENT})
        newer.take_latent(3, 5)
        newer.record_miss()
        before = newer.stats()
        assert (before.spills, before.evictions, before.hits_by_level[5], before.misses) == (2, 1, 1, 1)
        restored.absorb(newer)
        after = restored.stats()
        assert (after.spills, after.evictions, after.hits_by_level, after.misses) == (2, 1, {5: 1, 25: 0}, 1)
        assert after.prompts == 2
    finally:
        newer.close()
        restored.close()
