"""A prompt is in the index exactly while it has a stored latent; the same prompt text merges."""

from __future__ import annotations

import numpy as np
import pytest
from cache_room import room

from engine.cache.prompt_cache import PromptCache, ShapeKey

SHAPE = ShapeKey(50, 64, 64)
LATENT = np.zeros((4, 8, 8), dtype=np.float16)
LEVELS = (5, 10, 15, 20, 25)


def unit(i: int) -> np.ndarray:
    return np.eye(8, dtype=np.float32)[i]


def test_prompt_leaves_the_index_with_its_last_level():
    cache = PromptCache("hash", 8, LEVELS, max_bytes=room(3 * LATENT.nbytes, ["first", "second"], 8, LEVELS))
    first = cache.insert("first", unit(0), SHAPE, {5: LATENT, 25: LATENT})
    assert cache.lookup(unit(0), SHAPE).levels == (5, 25)
    cache.insert("second", unit(1), SHAPE, {10: LATENT, 15: LATENT})  # evicts (first, 5)
    neighbour = cache.lookup(unit(0), SHAPE)
    assert (neighbour.prompt_id, neighbour.levels) == (first, (25,))
    cache.insert("third", unit(2), SHAPE, {20: LATENT})  # evicts (first, 25): the last one
    neighbour = cache.lookup(unit(0), SHAPE)
    assert neighbour.prompt_id != first
    assert cache.stats().prompts == 2
    assert cache.take_latent(first, 25) is None


def test_identical_prompt_in_one_shape_merges_levels():
    cache = PromptCache("hash", 8, LEVELS, max_bytes=1 << 20)
    original = np.full((4, 8, 8), 1, dtype=np.float16)
    prompt_id = cache.insert("a cat", unit(0), SHAPE, {5: original, 10: original})
    assert cache.take_latent(prompt_id, 10) is not None
    again = cache.insert("a cat", unit(0), SHAPE, {10: original * 2, 25: original * 3})
    assert again == prompt_id
    assert cache.lookup(unit(0), SHAPE).levels == (5, 10, 25)
    np.testing.assert_array_equal(cache.take_latent(prompt_id, 10), original)  # kept, with its hit
    np.testing.assert_array_equal(cache.take_latent(prompt_id, 25), original * 3)
    stats = cache.stats()
    assert (stats.prompts, stats.entries, stats.hits_by_level[10]) == (1, 3, 2)


def test_taken_latents_are_read_only_copies_of_what_was_given():
    cache = PromptCache("hash", 8, LEVELS, max_bytes=1 << 20)
    given = np.arange(256, dtype=np.float32).reshape(4, 8, 8)
    prompt_id = cache.insert("p", unit(0), SHAPE, {5: given})
    given[:] = 0  # the caller reusing its buffer does not reach the cache
    taken = cache.take_latent(prompt_id, 5)
    assert taken.dtype == np.float32 and taken.shape == (4, 8, 8) and taken[0, 0, 1] == 1
    with pytest.raises(ValueError):
        taken[0, 0, 0] = 5


def test_misses_and_hits_are_counted():
    cache = PromptCache("hash", 8, LEVELS, max_bytes=1 << 20)
    prompt_id = cache.insert("p", unit(0), SHAPE, {5: LATENT, 25: LATENT})
    cache.take_latent(prompt_id, 25)
    cache.take_latent(prompt_id, 25)
    cache.take_latent(prompt_id, 5)
    cache.take_latent(prompt_id, 10)  # not stored: no hit
    cache.record_miss()
    stats = cache.stats()
    assert stats.hits_by_level == {5: 1, 10: 0, 15: 0, 20: 0, 25: 2} and stats.misses == 1


def test_a_hit_is_counted_and_credited_where_the_run_started_not_where_it_was_read():
    """The engine reads a latent as a request is prepared, and counts the hit once its image is made: a queued image
    moved up a level starts from another latent of its neighbour's (peeked), which is the one that served."""
    cache = PromptCache("hash", 8, LEVELS, max_bytes=room(2 * LATENT.nbytes, "ab", 8, LEVELS))
    a = cache.insert("a", unit(0), SHAPE, {5: LATENT, 25: LATENT})
    cache.read_latent(a, 5)  # prepared at 5 ...
    cache.peek_latent(a, 25)
    cache.record_hit(SHAPE, "a", 25)  # ... made from 25
    assert cache.stats().hits_by_level == {5: 0, 10: 0, 15: 0, 20: 0, 25: 1}
    cache.insert("b", unit(1), SHAPE, {5: LATENT})  # one latent must go: (a, 5), uncredited, not (a, 25) at 25 x 1
    assert cache.take_latent(a, 5) is None and cache.take_latent(a, 25) is not None
    cache.record_hit(SHAPE, "gone", 5)  # its prompt evicted since: counted all the same, nothing credited
    assert cache.stats().hits_by_level[5] == 1


@pytest.mark.parametrize(
    "latents, error",
    [({}, ValueError), ({7: LATENT}, ValueError), ({5: LATENT.astype(np.int32)}, TypeError)],
)
def test_bad_inserts_change_nothing(latents, error):
    cache = PromptCache("hash", 8, LEVELS, max_bytes=1 << 20)
    with pytest.raises(error):
        cache.insert("p", unit(0), SHAPE, latents)
    with pytest.raises(ValueError):
        cache.insert("p", np.ones(3), SHAPE, {5: LATENT})
    with pytest.raises(ValueError):
        cache.insert("p", np.full(8, np.nan), SHAPE, {5: LATENT})
    assert cache.lookup(unit(0), SHAPE) is None
    assert cache.stats().prompts == 0


def test_a_peeked_latent_is_not_a_hit():
    cache = PromptCache("hash", 8, LEVELS, max_bytes=1 << 20)
    prompt_id = cache.insert("a cat", unit(0), SHAPE, {25: LATENT + 1})
    np.testing.assert_array_equal(cache.peek_latent(prompt_id, 25), LATENT + 1)
    assert cache.peek_latent(prompt_id, 10) is None  # a level it does not have
    assert cache.stats().hits_by_level[25] == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_generation_with_a_non_finite_latent_is_not_cached(bad):
    """A run that overflowed hands back NaN or inf; once cached, every neighbour resumed from it would be spoiled."""
    cache = PromptCache("hash", 8, LEVELS, max_bytes=1 << 20)
    spoiled = LATENT.copy()
    spoiled[0, 0, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        cache.insert("a cat", unit(0), SHAPE, {5: LATENT, 10: spoiled})
    assert cache.lookup(unit(0), SHAPE) is None
    assert cache.stats().entries == 0


@pytest.mark.parametrize("levels", [(), (0, 5), (-5, 5)])
def test_a_cache_without_positive_levels_is_refused(levels):
    """Level 0 is a run from noise: no latent of it is worth keeping."""
    with pytest.raises(ValueError, match="levels must be positive step counts"):
        PromptCache("hash", 8, levels, max_bytes=1 << 20)


def test_a_latents_seed_is_known_while_it_is_stored():
    """Forgotten with it: kept, the table grew by an entry a latent evicted, and a level stored again without a seed
    (a prompt taken in from another cache) claimed the seed of the latent before it."""
    cache = PromptCache("hash", 8, LEVELS, max_bytes=room(LATENT.nbytes, ["first"], 8, LEVELS))
    first = cache.insert("first", unit(0), SHAPE, {5: LATENT}, seed=7)
    assert (cache.latent_seed(first, 5), cache.latent_seed(first, 25)) == (7, None)
    cache.insert("first", unit(0), SHAPE, {25: LATENT})  # room for one: level 5 evicted
    cache.insert("first", unit(0), SHAPE, {5: LATENT})  # level 25 evicted
    assert cache.latent_seed(first, 5) is None


def test_stats_count_the_bytes_of_each_tier(tmp_path):
    """Memory holds its latents and every prompt's text, vector and bookkeeping, those of spilled latents too."""
    texts = ["p0", "p1", "p2"]
    budget = room(LATENT.nbytes, texts, 8, LEVELS)
    cache = PromptCache("hash", 8, LEVELS, max_bytes=budget, spill_dir=str(tmp_path), spill_bytes=1 << 20)
    try:
        for i, text in enumerate(texts):  # memory holds the last, the first two are spilled
            cache.insert(text, unit(i), SHAPE, {5: LATENT})
        stats = cache.stats()
        assert (stats.bytes_in_memory, stats.bytes_on_disk) == (budget, 2 * LATENT.nbytes)
    finally:
        cache.close()
