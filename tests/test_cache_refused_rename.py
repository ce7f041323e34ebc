"""A save whose rename over the last one is refused (the folder gone read-only between the write and the rename:
EROFS, EACCES) leaves the last save whole, and the next start restores it. The failure is the rename's: before, the
removal of the temporary file, refused as well, raised its own error in its place, and the engine said its
checkpoint failed on a temporary file."""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib

import numpy as np
import pytest

from engine.cache import persistence
from engine.cache.embedders import HashEmbedder
from engine.cache.prompt_cache import PromptCache, ShapeKey
from engine.cache.service import build_cache_service
from engine.config import CacheConfig

EMBEDDER = HashEmbedder()
LEVELS = (5, 10)
SHAPE = ShapeKey(50, 64, 64)
MODEL = "tiny:0123456789abcdef"
LATENT = np.zeros((4, 8, 8), dtype=np.float16)  # what the tiny model's workers take at 64x64


def insert(cache: PromptCache, prompt: str) -> None:
    cache.insert(prompt, EMBEDDER.embed([prompt])[0], SHAPE, {5: LATENT})


def refuse_writes_to(folder: pathlib.Path, monkeypatch) -> None:
    """From now on the folder's renames and removals fail as on a file system remounted read-only."""
    replace, unlink = os.replace, pathlib.Path.unlink

    def refused_replace(source, target, *args, **kwargs):
        if pathlib.Path(target).parent == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(source), None, str(target))
        return replace(source, target, *args, **kwargs)

    def refused_unlink(path, *args, **kwargs):
        if path.parent == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "replace", refused_replace)
    monkeypatch.setattr(pathlib.Path, "unlink", refused_unlink)


def test_a_refused_rename_is_the_error_and_the_next_start_restores_the_last_save(tmp_path, monkeypatch):
    cache = PromptCache("hash", EMBEDDER.dim, LEVELS, max_bytes=1 << 20, model=MODEL)
    insert(cache, "a red fox")
    cache.save(str(tmp_path))
    insert(cache, "a blue whale")
    refuse_writes_to(tmp_path, monkeypatch)
    with pytest.raises(OSError) as refused:
        cache.save(str(tmp_path))
    cache.close()
    assert refused.value.errno == errno.EROFS and refused.value.filename2 == str(tmp_path / persistence.FILE_NAME)
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == [persistence.FILE_NAME, f"{persistence.TEMPORARY_PREFIX}{os.getpid()}"]  # whole, beside the last
    monkeypatch.undo()  # the folder writable again, as the next start finds it

    service = build_cache_service(CacheConfig(directory=str(tmp_path)), MODEL, LEVELS, choose=None)

    async def restored() -> int:
        while service.restoring:
            await asyncio.sleep(0.01)
        prompts = (await service.stats()).prompts
        await service.close(save_to=None)
        return prompts

    assert asyncio.run(asyncio.wait_for(restored(), timeout=60)) == 1  # "a red fox", of the last save written
    assert sorted(path.name for path in tmp_path.iterdir()) == [persistence.FILE_NAME]  # the leftover removed
