"""--cache-bytes bounds all the prompt cache holds in memory: each cached prompt's text, vector and index entry, not
its latents alone, whether they are in memory or spilled. Before, the budget counted latent bytes only: an engine
served 30,000 distinct prompts of 4,000 characters at 64x64 (--sim-latents sdxl, --cache-bytes 20000000), and grew
from 68 to 516 MB while argus_cache_bytes said 15 MB were held and nothing was evicted; the default 1 GiB let it grow
by many GB before evicting anything."""

from __future__ import annotations

import pathlib
import tracemalloc

import numpy as np
import pytest

from engine.cache.embedders import HashEmbedder
from engine.cache.prompt_cache import PromptCache, ShapeKey

EMBEDDER = HashEmbedder()
SHAPE = ShapeKey(50, 256, 256)
LATENT = np.zeros((4, 32, 32), dtype=np.float16)  # 8 KiB, an SD-XL latent at 256x256
LONG = "a lighthouse on a cliff at dusk, " * 121  # about 4,000 characters, as a client may send
BUDGET = 1 << 20
PROMPTS = 600


@pytest.mark.parametrize("spill", [False, True], ids=["memory", "spilled"])
def test_many_long_prompts_keep_the_cache_within_its_memory_budget(tmp_path, spill):
    spilled = dict(spill_dir=str(tmp_path), spill_bytes=1 << 30) if spill else {}
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        cache = PromptCache("hash", EMBEDDER.dim, (25,), max_bytes=BUDGET, **spilled)
        for i in range(PROMPTS):
            text = f"{i:04d} {LONG}"
            cache.insert(text, EMBEDDER.embed([text])[0], SHAPE, {25: LATENT})
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # pathlib interns each spill file's name in the interpreter's table of interned strings, which may grow by a resize
    # of its own: not the cache's
    interning = [tracemalloc.Filter(False, pathlib.__file__)]
    grown = sum(
        stat.size_diff
        for stat in after.filter_traces(interning).compare_to(before.filter_traces(interning), "filename")
    )
    try:
        stats = cache.stats()
        # what Python allocated for the cache (a shape of this few prompts has no hnswlib graph, which it cannot see)
        assert grown <= BUDGET
        # and what the cache counts covers each kept prompt's text and vector at least, within the budget
        assert stats.prompts * (len(LONG) + 4 * EMBEDDER.dim) <= stats.bytes_in_memory <= BUDGET
        assert stats.evictions == PROMPTS - stats.prompts > 0
        assert (stats.bytes_on_disk > 0) == spill  # the prompts of spilled latents stay in memory: counted too
    finally:
        cache.close()
