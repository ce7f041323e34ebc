"""Any sequence of inserts, lookups, takes, evictions and restarts keeps the prompt cache's invariants:
byte budgets (memory and disk) are never exceeded, memory's counting every cached prompt's own bytes besides the
latents it holds, the index and the latent store agree, and the seed of each latent's run is known while it is
stored, across a restart too."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from cache_room import room
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.cache.prompt_cache import PromptCache, ShapeKey, prompt_bytes

DIM = 8
# the cache's files in the machine's memory where it has a tmpfs: every restart's save syncs its file and folder to
# disk (persistence), and on a disk other processes shared, a run's 3,700 saves spent 17 of its 48 s in fsync alone
# (cProfile); what this checks holds on any file system
FOLDER_BASE = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
LEVELS = (5, 10, 15, 20, 25)
TEXTS = [f"prompt {i}" for i in range(8)]
SHAPES = [ShapeKey(50, 64, 64), ShapeKey(30, 64, 64)]
VECTORS = {text: np.random.default_rng(i).standard_normal(DIM).astype(np.float32) for i, text in enumerate(TEXTS)}
# memory budgets: room for up to 1500 bytes of latents and up to every prompt (each text in each shape)
MEMORY = st.builds(
    lambda latents, prompts: room(latents, TEXTS[:1] * prompts, DIM, LEVELS),
    st.integers(0, 1500),
    st.integers(0, len(TEXTS) * len(SHAPES)),
)


def latent(text: str, shape: ShapeKey, level: int) -> np.ndarray:
    """A latent determined by what it is a latent of, so a merged insert stores the same bytes; sizes vary."""
    seed = int.from_bytes(hashlib.blake2b(f"{text}|{shape}|{level}".encode(), digest_size=4).digest(), "little")
    rng = np.random.default_rng(seed)
    return rng.standard_normal((4, 4, 1 + seed % 4)).astype(np.float16 if seed % 2 else np.float32)


class CacheMachine(RuleBasedStateMachine):
    # spilling on in three runs of four: it has the most paths
    @initialize(max_bytes=MEMORY, spill=st.integers(0, 3).map(bool), spill_bytes=st.integers(0, 1500))
    def start(self, max_bytes: int, spill: bool, spill_bytes: int) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="argus-test-cache-", dir=FOLDER_BASE))
        self.budgets = dict(max_bytes=max_bytes, spill_dir=str(self.tmp) if spill else None, spill_bytes=spill_bytes)
        self.cache = PromptCache("hash", DIM, LEVELS, **self.budgets)
        self.names: dict[int, tuple[str, ShapeKey]] = {}
        self.seeds: dict[tuple[int, int], int] = {}  # the seed of the insert each stored latent came with, if any

    def teardown(self) -> None:
        if hasattr(self, "cache"):
            self.cache.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(
        text=st.sampled_from(TEXTS),
        shape=st.sampled_from(SHAPES),
        levels=st.sets(st.sampled_from(LEVELS), min_size=1),
        seed=st.none() | st.integers(0, 3),
    )
    def insert(self, text: str, shape: ShapeKey, levels: set[int], seed: int | None) -> None:
        stored = self.stored()
        prompt_id = self.cache.insert(text, VECTORS[text], shape, {k: latent(text, shape, k) for k in levels}, seed)
        assert self.names.setdefault(prompt_id, (text, shape)) == (text, shape)
        # a level the prompt has keeps its latent, and so the seed of the run it came from
        for level in levels:
            if (prompt_id, level) not in stored:
                self.seeds.pop((prompt_id, level), None)
                if seed is not None:
                    self.seeds[(prompt_id, level)] = seed

    @rule(text=st.sampled_from(TEXTS), shape=st.sampled_from(SHAPES), pick=st.integers(0, 4))
    def lookup_then_take(self, text: str, shape: ShapeKey, pick: int) -> None:
        neighbour = self.cache.lookup(VECTORS[text], shape)
        if neighbour is None:
            self.cache.record_miss()
            return
        assert self.names[neighbour.prompt_id] == (neighbour.prompt, shape)
        assert neighbour.levels
        level = neighbour.levels[pick % len(neighbour.levels)]
        taken = self.cache.take_latent(neighbour.prompt_id, level)
        # nothing can run between a lookup and a take: what the lookup reports is there
        assert taken is not None
        np.testing.assert_array_equal(taken, latent(neighbour.prompt, shape, level))

    @precondition(lambda self: self.names)
    @rule(data=st.data(), level=st.sampled_from(LEVELS))
    def take_any(self, data: st.DataObject, level: int) -> None:
        prompt_id = data.draw(st.sampled_from(sorted(self.names)))
        taken = self.cache.take_latent(prompt_id, level)
        if taken is not None:
            text, shape = self.names[prompt_id]
            np.testing.assert_array_equal(taken, latent(text, shape, level))

    @rule(max_bytes=MEMORY, spill_bytes=st.integers(0, 1500))
    def restart(self, max_bytes: int, spill_bytes: int) -> None:
        """Save, then load with other budgets: what does not fit is evicted, by the same rules."""
        self.cache.save(str(self.tmp / "saved"))
        self.cache.close()
        self.budgets.update(max_bytes=max_bytes, spill_bytes=spill_bytes)
        self.cache = PromptCache.load(str(self.tmp / "saved"), "hash", DIM, LEVELS, **self.budgets)

    @invariant()
    def budgets_hold(self) -> None:
        stats = self.cache.stats()
        assert 0 <= stats.bytes_in_memory <= stats.max_bytes
        assert 0 <= stats.bytes_on_disk <= stats.spill_bytes
        spilled = [f for f in self.tmp.glob("argus-spill-*/*")]
        assert sum(f.stat().st_size for f in spilled) == stats.bytes_on_disk
        # memory holds the latents in it, and each cached prompt's own bytes, its latents in memory or on disk
        in_memory = sum(entry.nbytes for _, _, entry in self.cache._store.stored() if not entry.on_disk)
        prompts = sum(prompt_bytes(p.text, DIM, len(LEVELS)) for p in self.cache._prompts.values())
        assert stats.bytes_in_memory == in_memory + prompts

    def stored(self) -> set[tuple[int, int]]:
        return {key for key, _, _ in self.cache._store.stored()}

    @invariant()
    def index_and_store_agree(self) -> None:
        cache = self.cache
        stored = self.stored()
        listed = {(prompt_id, level) for prompt_id, p in cache._prompts.items() for level in p.levels}
        assert stored == listed
        assert all(p.levels for p in cache._prompts.values())  # no prompt without a latent
        for shape, index in cache._indexes.items():
            in_shape = {prompt_id for prompt_id, p in cache._prompts.items() if p.shape == shape}
            assert len(index) == len(in_shape) and all(prompt_id in index for prompt_id in in_shape)
        assert cache.stats().entries == len(stored)

    @invariant()
    def seeds_known_of_stored_latents_alone(self) -> None:
        stored = self.stored()
        assert {key: self.cache.latent_seed(*key) for key in stored} == {key: self.seeds.get(key) for key in stored}
        assert set(self.cache._seeds) <= stored  # an evicted latent's is forgotten: kept, it grew without bound


CacheMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class TestCacheInvariants(CacheMachine.TestCase):
    def runTest(self) -> None:
        try:
            super().runTest()
        except SystemError as error:
            # CPython 3.11 (gh-106905; seen on 3.11.7 in a clean-clone CI run): ast.parse, which Hypothesis runs on
            # this file's source before the first example, fails so now and then in a threaded process. Not the
            # cache's failure, and each parse starts its count afresh
            if "AST constructor recursion depth mismatch" not in str(error):
                raise
            super().runTest()
