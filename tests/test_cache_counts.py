"""The cache's counts. PromptCache.changes counts what a save would write differently: a checkpoint with no change
since the last is skipped, so each of these missing kept an old file, and one counted for nothing rewrote an unchanged
one. absorb() adds every running count of the cache served while the saved one was read: /metrics shows them as
counters, and one that fell at the hand-over reads as an engine restart."""

from __future__ import annotations

import numpy as np
from cache_room import room

from engine.cache.prompt_cache import PromptCache, ShapeKey

SHAPE = ShapeKey(50, 64, 64)
LATENT = np.zeros((4, 8, 8), dtype=np.float16)  # 512 bytes
LEVELS = (5, 25)


def unit(i: int) -> np.ndarray:
    return np.eye(8, dtype=np.float32)[i]


def test_a_prompt_asked_for_again_with_only_the_levels_it_has_is_no_change():
    cache = PromptCache("hash", 8, LEVELS, max_bytes=1 << 20)
    cache.insert("a cat", unit(0), SHAPE, {5: LATENT})
    before = cache.changes
    cache.insert("a cat", unit(0), SHAPE, {5: LATENT})
    assert cache.changes == before
    cache.insert("a cat", unit(0), SHAPE, {5: LATENT, 25: LATENT})
    assert cache.changes == before + 1


def test_a_hit_is_a_change_whether_taken_or_recorded():
    """A latent's uses rank it for eviction, and are saved."""
    cache = PromptCache("hash", 8, LEVELS, max_bytes=1 << 20)
    prompt_id = cache.insert("a cat", unit(0), SHAPE, {5: LATENT})
    before = cache.changes
    cache.take_latent(prompt_id, 5)
    assert cache.changes == before + 1
    cache.record_hit(SHAPE, "a cat", 5)
    assert cache.changes == before + 2


def test_a_spill_file_found_unreadable_is_a_change(tmp_path):
    """Its latent is evicted: the next save leaves it out."""
    memory = room(LATENT.nbytes, ["a cat", "a dog"], 8, LEVELS)
    cache = PromptCache("hash", 8, LEVELS, max_bytes=memory, spill_dir=str(tmp_path), spill_bytes=1 << 20)
    try:
        spilled = cache.insert("a cat", unit(0), SHAPE, {5: LATENT})
        cache.insert("a dog", unit(1), SHAPE, {5: LATENT})  # the cat's latent spilled
        [path] = tmp_path.glob(f"*/{spilled}_5_*.latent")
        path.unlink()
        before = cache.changes
        assert cache.read_latent(spilled, 5) is None
        assert cache.changes == before + 1 and cache.stats().prompts == 1
    finally:
        cache.close()


def test_a_hit_recorded_on_a_latent_evicted_since_it_was_read_is_counted_and_credits_nothing():
    """The run started from a latent read earlier; a later insert evicted it, its prompt kept by another level."""
    cache = PromptCache("hash", 8, LEVELS, max_bytes=room(LATENT.nbytes, ["a cat"], 8, LEVELS))
    cache.insert("a cat", unit(0), SHAPE, {5: LATENT, 25: LATENT})  # room for one: the level 5 goes
    assert cache.lookup(unit(0), SHAPE).levels == (25,)
    cache.record_hit(SHAPE, "a cat", 5)
    assert cache.stats().hits_by_level == {5: 1, 25: 0}


def test_absorb_adds_the_newer_caches_spills_evictions_hits_and_misses(tmp_path):
    restored = PromptCache("hash", 8, LEVELS, max_bytes=1 << 20)
    memory = room(LATENT.nbytes, ["prompt 0", "prompt 1"], 8, LEVELS)
    newer = PromptCache("hash", 8, LEVELS, max_bytes=memory, spill_dir=str(tmp_path), spill_bytes=512)
    try:
        # memory holds the prompts of two and the latent of one, the spill folder one: two spills, one eviction
        for i in range(3):
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
