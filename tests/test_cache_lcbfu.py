"""LCBFU evicts the documented victim: the lowest K x uses, the oldest among equals."""

from __future__ import annotations

import numpy as np
from cache_room import room

from engine.cache.lcbfu import Lcbfu, Record
from engine.cache.prompt_cache import PromptCache, ShapeKey

SHAPE = ShapeKey(50, 64, 64)
LATENT = np.zeros((4, 8, 8), dtype=np.float16)  # 512 bytes


def victim(ranks: Lcbfu):
    """The key of the entry to evict next, or None."""
    return next((key for key, _ in ranks.lowest()), None)


def test_lowest_score_then_oldest():
    ranks = Lcbfu()
    ranks.add("a", Record(level=25, uses=0, seq=0))
    ranks.add("b", Record(level=5, uses=0, seq=1))
    ranks.add("c", Record(level=10, uses=0, seq=2))
    assert victim(ranks) == "a"  # all score 0: the oldest goes first, whatever its K
    ranks.hit("a")  # 25
    ranks.hit("b")
    ranks.hit("b")  # 10
    ranks.hit("c")  # 10
    assert victim(ranks) == "b"  # tied at 10 with c, and older
    ranks.hit("b")  # 15
    assert victim(ranks) == "c"
    ranks.remove("c")
    assert victim(ranks) == "b"
    ranks.remove("b")
    ranks.remove("a")
    assert victim(ranks) is None


def test_a_record_keeps_its_rank_when_it_moves():
    first, second = Lcbfu(), Lcbfu()
    first.add("old", Record(level=5, uses=2, seq=0))
    second.add("new", Record(level=5, uses=2, seq=7))
    second.add("old", first.remove("old"))
    assert victim(second) == "old"
    assert victim(first) is None


def test_stale_heap_items_are_dropped():
    ranks = Lcbfu()
    ranks.add("x", Record(level=5, uses=0, seq=0))
    ranks.add("y", Record(level=25, uses=0, seq=1))
    for _ in range(1000):
        ranks.hit("x")
    assert victim(ranks) == "y"
    assert len(ranks._heap) <= 2 * len(ranks) + 64


def test_a_key_removed_and_added_again_ranks_by_its_new_record():
    """A prompt's latent evicted and stored again (a new seq, the same score): its old heap item is not its rank."""
    ranks = Lcbfu()
    ranks.add("a", Record(level=5, uses=0, seq=0))
    ranks.remove("a")
    ranks.add("b", Record(level=5, uses=0, seq=1))
    ranks.add("a", Record(level=5, uses=0, seq=2))
    assert [key for key, _ in ranks.lowest()] == ["b", "a"]


def test_lowest_walks_every_entry_in_rank_order_and_moves_nothing():
    rng = np.random.default_rng(0)
    ranks = Lcbfu()
    for seq in range(200):
        ranks.add(seq, Record(level=int(rng.choice([5, 10, 25])), uses=0, seq=seq))
    for key in rng.integers(0, 200, 500):
        ranks.hit(int(key))  # leaves stale heap items behind
    for key in range(0, 200, 7):
        ranks.remove(key)
    expected = sorted((key for key in range(200) if key % 7), key=lambda key: ranks.record(key).rank)
    assert [key for key, _ in ranks.lowest()] == expected
    assert [key for key, _ in ranks.lowest()] == expected  # a second walk sees the same


def test_cache_evicts_the_least_beneficial_entry():
    cache = PromptCache("hash", 4, (5, 10, 25), max_bytes=room(4 * LATENT.nbytes, "abc", 4, (5, 10, 25)))
    rng = np.random.default_rng(0)
    a = cache.insert("a", rng.standard_normal(4), SHAPE, {5: LATENT, 25: LATENT})
    b = cache.insert("b", rng.standard_normal(4), SHAPE, {10: LATENT, 25: LATENT})
    cache.take_latent(a, 5)  # score 5
    cache.take_latent(b, 10)  # score 10
    cache.take_latent(b, 25)  # score 25; (a, 25) keeps score 0
    c = cache.insert("c", rng.standard_normal(4), SHAPE, {5: LATENT})
    assert cache.take_latent(a, 25) is None  # the only score-0 entry older than c's
    cache.insert("d", rng.standard_normal(4), SHAPE, {5: LATENT})
    assert cache.take_latent(c, 5) is None  # score 0 and older than d's
    assert [cache.take_latent(*key) is not None for key in [(a, 5), (b, 10), (b, 25)]] == [True] * 3
    assert cache.stats().evictions == 2


def test_fresh_latents_of_one_prompt_go_lowest_level_first():
    cache = PromptCache("hash", 4, (5, 10, 25), max_bytes=room(3 * LATENT.nbytes, "ab", 4, (5, 10, 25)))
    a = cache.insert("a", np.ones(4), SHAPE, {25: LATENT, 5: LATENT, 10: LATENT})
    cache.insert("b", -np.ones(4), SHAPE, {5: LATENT})
    assert cache.take_latent(a, 5) is None
    assert cache.take_latent(a, 10) is not None and cache.take_latent(a, 25) is not None
