"""A saved cache restored into budgets lower than it was saved with says what it left out, not only what it kept."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from cache_room import room

from engine.cache.cache_dir import load_saved_cache, restore_only
from engine.cache.embedders import HashEmbedder
from engine.cache.prompt_cache import PromptCache, ShapeKey
from engine.config import CacheConfig

LEVELS = (5, 10, 15, 20, 25)
SHAPE = ShapeKey(50, 64, 64)
LATENT = np.zeros((4, 8, 8), dtype=np.float16)  # 512 bytes
EMBEDDER = HashEmbedder()
MODEL = "tiny:0123456789abcdef"


def _restored(tmp_path, caplog, max_bytes: int, read_only_spilling: int | None = None) -> tuple[int, list[str]]:
    """Restored with `max_bytes`; given `read_only_spilling`, as an engine whose --cache-dir cannot be written and
    whose --cache-dir-bytes was that."""
    saved = PromptCache("hash", EMBEDDER.dim, LEVELS, max_bytes=1 << 20, model=MODEL)
    for i in range(3):
        saved.insert(f"prompt {i}", EMBEDDER.embed([f"prompt {i}"])[0], SHAPE, {5: LATENT, 10: LATENT})
    saved.save(str(tmp_path))
    saved.close()
    with caplog.at_level(logging.INFO, logger="argus.cache"):
        config = CacheConfig(max_bytes=max_bytes, directory=str(tmp_path))
        if read_only_spilling is not None:
            config = restore_only(dataclasses.replace(config, directory_bytes=read_only_spilling))
        cache = load_saved_cache(config, MODEL, EMBEDDER, LEVELS)
    try:
        return cache.stats().entries, [record.getMessage() for record in caplog.records]
    finally:
        cache.close()


def _room(latents: int) -> int:
    """Room for the three prompts and this many latents."""
    return room(latents * LATENT.nbytes, [f"prompt {i}" for i in range(3)], EMBEDDER.dim, LEVELS)


def test_latents_left_out_for_room_at_the_restore_are_warned_of(tmp_path, caplog):
    entries, lines = _restored(tmp_path, caplog, max_bytes=_room(4))
    assert entries == 4
    assert lines[-1] == (
        f"2 latents of the saved cache found no room (--cache-bytes {_room(4) / 1024:.1f} KiB, --cache-dir-bytes 0"
        " bytes: lower than it was saved with, or spills the disk refused): left out, the best ranked kept (LCBFU); the"
        " next save holds only what was kept"
    )


def test_a_read_only_cache_dir_names_the_spill_budget_the_operator_gave_as_unused(tmp_path, caplog):
    """Spilling is off while --cache-dir cannot be written: the line said `--cache-dir-bytes 0 bytes`, a figure the
    operator never gave, for their 1 MiB."""
    entries, lines = _restored(tmp_path, caplog, max_bytes=_room(4), read_only_spilling=1 << 20)
    assert entries == 4
    assert lines[-1] == (
        f"2 latents of the saved cache found no room (--cache-bytes {_room(4) / 1024:.1f} KiB, --cache-dir-bytes 1.0"
        " MiB, unused while the folder cannot be written): left out, the best ranked kept (LCBFU); the save is restored"
        " anew, spilling, once the folder can be written, before it is saved over"
    )


def test_a_cache_restored_whole_says_nothing_of_room(tmp_path, caplog):
    entries, lines = _restored(tmp_path, caplog, max_bytes=_room(6))
    assert entries == 6
    assert lines[-1].startswith("prompt cache restored from ") and lines[-1].endswith(": 3 prompts")
