"""A save meeting spill files that pass the check by size but whose reads fail (a bad sector): each is left out and the
file written again without it, up to four times; those found are evicted at the release either way, so a save that
gave up is followed by one that gets further."""

from __future__ import annotations

import os

import numpy as np
import pytest
from bad_sectors import SECTOR, BadSector, failing_preadv
from cache_room import room

from engine.cache.latent_store import StoreSnapshot
from engine.cache.persistence import FILE_NAME, read_cache_file
from engine.cache.prompt_cache import PromptCache, ShapeKey

DIM = 16
SHAPE = ShapeKey(50, 64, 64)
PROMPTS = 6


def vector(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(DIM).astype(np.float32)


def latent(i: int) -> np.ndarray:
    return np.full((4, 8, 8), i, np.float16)  # 512 bytes: memory holds one, the others are spilled


@pytest.fixture
def cache(tmp_path):
    spill = dict(spill_dir=str(tmp_path / "spill"), spill_bytes=(PROMPTS - 1) * 512)  # full: one more evicts one
    memory = room(512, [f"prompt {i}" for i in range(PROMPTS)], DIM, (5,))  # the prompts, and one latent
    cache = PromptCache("hash", DIM, (5,), max_bytes=memory, **spill)
    for i in range(PROMPTS):
        cache.insert(f"prompt {i}", vector(i), SHAPE, {5: latent(i)})
    yield cache
    cache.close()


def fail_spill_files(tmp_path, monkeypatch, prompt_ids: list[int]) -> None:
    """The reads of these prompts' spill files fail, as a bad sector's do."""
    preadv = os.preadv
    for prompt_id in prompt_ids:
        [spilled] = (tmp_path / "spill").glob(f"*/{prompt_id}_5_*.latent")
        preadv = failing_preadv(BadSector.of(spilled, 0, SECTOR), preadv)
    monkeypatch.setattr(os, "preadv", preadv)


def saved_prompts(directory) -> list[str]:
    return [prompt.text for prompt in read_cache_file(directory / FILE_NAME, "hash", DIM, (5,), "").prompts]


def test_three_unreadable_spill_files_are_left_out_of_a_save_and_evicted(tmp_path, monkeypatch, cache):
    fail_spill_files(tmp_path, monkeypatch, [1, 2, 3])  # the first prompts' (ids from 1)
    cache.save(str(tmp_path / "saved"))
    assert cache.stats().prompts == PROMPTS - 3
    monkeypatch.undo()  # an inode the failing files had may be the saved file's
    assert saved_prompts(tmp_path / "saved") == ["prompt 3", "prompt 4", "prompt 5"]


def test_a_save_gives_up_at_the_fourth_and_the_next_gets_past_them(tmp_path, monkeypatch, cache):
    fail_spill_files(tmp_path, monkeypatch, [1, 2, 3, 4])
    with pytest.raises(Exception, match="could not be read"):
        cache.save(str(tmp_path / "saved"))
    assert list((tmp_path / "saved").iterdir()) == []  # nor its temporary file, of the cache's size
    assert cache.stats().prompts == PROMPTS - 4  # evicted at the release, though the save failed
    cache.save(str(tmp_path / "saved"))
    monkeypatch.undo()
    assert saved_prompts(tmp_path / "saved") == ["prompt 4", "prompt 5"]


def test_a_spill_file_cut_short_after_the_check_by_size_is_left_out_as_an_unreadable_one(tmp_path, monkeypatch, cache):
    """Cut short between the check and its read (a tmp cleaner): the read's ValueError, not a failed save."""
    monkeypatch.setattr(StoreSnapshot, "intact", lambda self, key, entry: True)
    [spilled] = (tmp_path / "spill").glob("*/1_5_*.latent")
    spilled.write_bytes(b"short")
    cache.save(str(tmp_path / "saved"))
    assert saved_prompts(tmp_path / "saved") == [f"prompt {i}" for i in range(1, PROMPTS)]


def test_a_snapshot_released_twice_lets_go_of_the_store_once(tmp_path, cache):
    """The spill files a second snapshot names are kept until it is written, whatever the first's release does."""
    first, second = cache.snapshot(), cache.snapshot()
    cache.insert("prompt 6", vector(6), SHAPE, {5: latent(6)})
    cache.insert("prompt 7", vector(7), SHAPE, {5: latent(7)})  # the oldest two evicted: their files doomed
    first.release()
    first.release()
    second.write(str(tmp_path / "saved"))
    second.release()
    assert saved_prompts(tmp_path / "saved") == [f"prompt {i}" for i in range(PROMPTS)]
