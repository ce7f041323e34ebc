"""Reads of the cache's own files (engine/cache/file_reads.py): a short read is carried on until the buffer is full, a
file that ends first is FileEndsEarly, and a saved cache that shrinks as its latents are read is a CacheFileError."""

from __future__ import annotations

import os

import numpy as np
import pytest

from engine.cache import file_reads, persistence
from engine.cache.persistence import FILE_NAME, CacheFileError
from engine.cache.prompt_cache import PromptCache, ShapeKey

DIM = 16
LEVELS = (5, 10)


def test_short_reads_are_carried_on_until_the_buffer_is_full(tmp_path, monkeypatch):
    """The kernel may return fewer bytes than asked (a signal, a network file system) without the file ending."""
    path = tmp_path / "data"
    path.write_bytes(bytes(range(10)))
    preadv = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, offset: preadv(fd, [buffers[0][:3]], offset))
    buffer = bytearray(7)
    with file_reads.opened(path) as fd:
        file_reads.read_into(fd, buffer, 2)
    assert bytes(buffer) == bytes(range(2, 9))


def test_a_file_that_ends_before_the_bytes_asked_for_is_file_ends_early(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(bytes(10))
    with file_reads.opened(path) as fd, pytest.raises(file_reads.FileEndsEarly, match="ends 4 bytes short"):
        file_reads.read_array(fd, np.dtype("<u2"), (4,), 6)


def saved_cache_file(tmp_path):
    """The file of a saved cache of one prompt with one latent."""
    cache = PromptCache("hash", DIM, LEVELS, max_bytes=1 << 20)
    cache.insert("p", np.ones(DIM, np.float32), ShapeKey(50, 64, 64), {5: np.ones((4, 8, 8), np.float16)})
    cache.save(str(tmp_path))
    cache.close()
    return tmp_path / FILE_NAME


def test_a_saved_cache_cut_short_as_its_latents_are_read_is_a_cache_file_error(tmp_path):
    """Checked whole by read_cache_file, then cut short (rewritten by another engine on the folder) before its last
    latent was read: not a latent read short, nor a ValueError the load would take for a bad latent."""
    path = saved_cache_file(tmp_path)
    saved = persistence.read_cache_file(path, "hash", DIM, LEVELS, "")
    os.truncate(path, path.stat().st_size - 40)  # the digest and 8 bytes of the latent
    with pytest.raises(CacheFileError, match="changed while it was being loaded"):
        saved.read_latent(saved.latents[0])


def test_a_saved_cache_cut_short_after_its_size_was_taken_is_a_cache_file_error(tmp_path, monkeypatch):
    """Not the ValueError of a file ending early, which the engine's start took for no refusal of the file."""
    path = saved_cache_file(tmp_path)
    fstat = os.fstat

    def fstat_then_cut(fd: int) -> os.stat_result:
        taken = fstat(fd)
        os.truncate(path, taken.st_size // 2)
        return taken

    monkeypatch.setattr(os, "fstat", fstat_then_cut)
    with pytest.raises(CacheFileError, match="shrank while it was being read"):
        persistence.read_cache_file(path, "hash", DIM, LEVELS, "")
