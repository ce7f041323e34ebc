"""The cache service's ends: closing (save, then always close the cache and stop its thread)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from engine.cache.embedders import HashEmbedder
from engine.cache.prompt_cache import PromptCache, ShapeKey
from engine.cache_service import CacheService

LEVELS = (5, 10, 15, 20, 25)
SHAPE = ShapeKey(50, 64, 64)
LATENT = np.zeros((4, 8, 8), dtype=np.float16)


def test_a_failed_save_still_closes_the_cache_and_stops_the_thread(tmp_path):
    embedder = HashEmbedder()
    cache = PromptCache("hash", embedder.dim, LEVELS, max_bytes=0, spill_dir=str(tmp_path / "spill"), spill_bytes=4096)
    cache.insert("a cat", embedder.embed(["a cat"])[0], SHAPE, {5: LATENT})
    service = CacheService(cache, embedder, choose=lambda *args: (0, 0))
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")

    async def close_then_ask_for_stats():
        with pytest.raises(OSError):
            await service.close(save_to=str(not_a_directory))
        with pytest.raises(RuntimeError, match="shutdown"):  # the thread takes no more work
            await service.stats()

    asyncio.run(close_then_ask_for_stats())
    assert list((tmp_path / "spill").iterdir()) == []  # the cache was closed: its spill folder is gone
