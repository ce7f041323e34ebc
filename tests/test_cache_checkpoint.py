"""--cache-save-interval: the cache is saved while the engine runs, so an engine killed (SIGKILL, the OOM killer, a
crash) restarts warm. Before, it was saved only at a clean drain, and a kill lost all of it."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from test_cache_restore_background import (
    EMBEDDER,
    LATENT,
    LEVELS,
    MODEL,
    file_identity,
    request,
    returned,
    similarity,
    vector,
)
from test_cache_restore_background import take_level_5 as choose
from test_cache_warm_restart import assert_a_restart_finds_it, generate, start

from engine.cache import persistence
from engine.cache_service import build_cache_service
from engine.config import CacheConfig


def test_an_engine_killed_after_a_checkpoint_restarts_from_it(tmp_path):
    cache_dir = tmp_path / "cache"
    first = start(tmp_path, cache_dir, "--cache-save-interval", "0.2")
    try:
        assert generate(first).images[0].similarity is None
        saved = f"prompt cache checkpointed to {cache_dir}: 1 prompts"
        deadline = time.monotonic() + 60
        while saved not in first.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(first.process.pid, signal.SIGKILL)  # the engine and its worker: no drain, no save
        first.process.wait()
    assert_a_restart_finds_it(tmp_path, cache_dir)


def test_a_checkpoint_writes_only_when_the_cache_changed(tmp_path):
    """A hit changes the file too: a latent's uses rank it for eviction, and are saved."""
    service = build_cache_service(CacheConfig(directory=str(tmp_path)), MODEL, LEVELS, choose=choose)
    path = tmp_path / persistence.FILE_NAME

    async def checkpoint_thrice() -> None:
        service.insert(request("a red fox"), vector("a red fox"), returned({5: LATENT}))
        await service.checkpoint(str(tmp_path))
        first = file_identity(path)
        await service.checkpoint(str(tmp_path))
        assert file_identity(path) == first  # nothing new: not written
        assert await similarity(service, "a red fox") == pytest.approx(1.0)  # a hit on the latent of level 5
        await service.checkpoint(str(tmp_path))
        assert file_identity(path) != first
        await service.close(save_to=str(tmp_path))

    asyncio.run(asyncio.wait_for(checkpoint_thrice(), timeout=60))
    [latent] = persistence.read_cache_file(path, "hash", EMBEDDER.dim, LEVELS, MODEL).latents
    assert latent.uses == 1
