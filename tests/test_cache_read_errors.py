"""A saved cache part of which the disk cannot read (a bad sector: its reads fail with EIO) is restored but for that
part, and the next save writes it whole; before, the whole file was set aside and every cached prompt lost at the
restart. A file with nothing readable in it, or a foreign one, is still set aside. Later, a latent whose spill file
cannot be read costs its hit only."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from bad_sectors import SECTOR, BadSector, engine_environment, failing_preadv
from cache_room import room
from test_cache_restore_background import served
from test_cache_warm_restart import start as start_engine_on
from test_hello_bounds import SIM_MODEL

from controller.level_shares import Choice
from engine.cache import persistence
from engine.cache.cache_dir import load_saved_cache
from engine.cache.embedders import HashEmbedder
from engine.cache.persistence import FILE_NAME
from engine.cache.prompt_cache import PromptCache, ShapeKey
from engine.cache.service import Returned, build_cache_service
from engine.client import ArgusClient
from engine.config import CacheConfig
from protocols.client_messages import Generate, Images
from protocols.codec import Blob
from protocols.worker_messages import ItemDone
from workers.limits import SIM_LATENT_SHAPE

LEVELS = (5, 10, 15, 20, 25)
SHAPE = ShapeKey(50, 64, 64)
EMBEDDER = HashEmbedder()
MODEL = "tiny:0123456789abcdef"  # its workers take (4, 8, 8) latents at 64x64
LATENT_SHAPE = (4, 8, 8)  # 512 bytes in float16: a sector holds 8


def prompt(i: int) -> str:
    return f"prompt {i}: a harbour at dawn, etching"


def latent(i: int, level: int, shape: tuple[int, ...] = LATENT_SHAPE) -> np.ndarray:
    return np.full(shape, i + level / 100, np.float16)


@dataclass(frozen=True)
class Saved:
    path: Path
    file: persistence.CacheFile  # as read whole, before any read fails

    def latents_in(self, start: int, end: int) -> set[tuple[int, int]]:
        """The (prompt id, level) of the latents with a byte in [start, end)."""
        begin = self.file.latents_start
        return {
            (saved.prompt_id, saved.level)
            for saved in self.file.latents
            if begin + saved.offset < end and begin + saved.offset + saved.nbytes > start
        }

    def vectors_start(self) -> int:
        return self.file.vectors_start


def save(directory: Path, prompts: int, model: str = MODEL, shape: tuple[int, ...] = LATENT_SHAPE) -> Saved:
    """`prompts` prompts with a latent at every level, saved in `directory`; prompt i has id i + 1."""
    cache = PromptCache("hash", EMBEDDER.dim, LEVELS, max_bytes=1 << 30, model=model)
    for i in range(prompts):
        cache.insert(prompt(i), EMBEDDER.embed([prompt(i)])[0], SHAPE, {k: latent(i, k, shape) for k in LEVELS})
    cache.save(str(directory))
    cache.close()
    path = directory / FILE_NAME
    return Saved(path, persistence.read_cache_file(path, "hash", EMBEDDER.dim, LEVELS, model))


def sector_at(offset: int) -> int:
    return offset - offset % SECTOR


def load(directory: Path, model: str = MODEL) -> PromptCache | None:
    return load_saved_cache(CacheConfig(directory=str(directory)), model, EMBEDDER, LEVELS)


def load_logged(directory: Path, caplog, model: str = MODEL) -> PromptCache | None:
    with caplog.at_level("INFO", logger="argus.cache"):
        return load(directory, model)


def fail_reads(monkeypatch, path: Path, start: int, end: int) -> None:
    """From now on, reads of `path` in [start, end) fail as a bad sector's do."""
    monkeypatch.setattr(os, "preadv", failing_preadv(BadSector.of(path, start, end)))


def set_aside(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{FILE_NAME}.rejected-*"))


def warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelname in ("WARNING", "ERROR")]


def assert_holds_all_but(cache: PromptCache, prompts: int, lost: set[tuple[int, int]]) -> None:
    """Every saved latent but those `lost` is restored as it was saved; a prompt that lost all of its is gone."""
    for i in range(prompts):
        prompt_id, kept = i + 1, tuple(k for k in LEVELS if (i + 1, k) not in lost)
        neighbour = cache.lookup(EMBEDDER.embed([prompt(i)])[0], SHAPE)
        if not kept:
            assert neighbour.prompt_id != prompt_id, prompt(i)
            continue
        assert (neighbour.prompt_id, neighbour.levels) == (prompt_id, kept), prompt(i)
        for level in kept:
            np.testing.assert_array_equal(cache.take_latent(prompt_id, level), latent(i, level))


def restored_past_a_bad_sector(tmp_path, monkeypatch, caplog, start: int, lost: set[tuple[int, int]]):
    """The 40 prompts saved in `tmp_path` loaded with the sector at `start` failing its reads: nothing set aside, all
    but the latents `lost` restored as saved. The cache's stats and its one warning."""
    fail_reads(monkeypatch, tmp_path / FILE_NAME, start, start + SECTOR)
    cache = load_logged(tmp_path, caplog)
    assert cache is not None, warnings(caplog)
    try:
        assert set_aside(tmp_path) == []
        assert_holds_all_but(cache, 40, lost)
        [warning] = warnings(caplog)
        return cache.stats(), warning
    finally:
        cache.close()


def test_a_bad_sector_among_the_latents_loses_only_the_latents_in_it(tmp_path, monkeypatch, caplog):
    saved = save(tmp_path, prompts=40)  # 200 latents, 100 KiB
    start = sector_at(saved.file.latents_start + 100 * 512)
    lost = saved.latents_in(start, start + SECTOR)
    assert 8 <= len(lost) <= 9
    stats, warning = restored_past_a_bad_sector(tmp_path, monkeypatch, caplog, start, lost)
    assert stats.entries == 200 - len(lost)
    assert warning.startswith(f"{len(lost)} of 200 saved latents could not be read from {saved.path}")
    assert "Input/output error" in warning


def test_a_bad_sector_among_the_vectors_loses_only_the_prompts_whose_vectors_it_holds(tmp_path, monkeypatch, caplog):
    saved = save(tmp_path, prompts=40)  # a vector is 4 KiB (1,024 dimensions): a sector holds parts of two
    vectors_start = saved.vectors_start()
    start = sector_at(vectors_start + 10 * 4096 + 100)
    rows = {(offset - vectors_start) // 4096 for offset in (start, start + SECTOR - 1)}
    assert len(rows) == 2
    lost = {(row + 1, level) for row in rows for level in LEVELS}
    stats, warning = restored_past_a_bad_sector(tmp_path, monkeypatch, caplog, start, lost)
    assert stats.prompts == 38
    assert warning.startswith(f"10 of 200 saved latents could not be read from {saved.path}")


@pytest.mark.parametrize("where", ["header", "every latent", "every vector"])
def test_a_file_nothing_usable_can_be_read_from_is_still_set_aside(tmp_path, monkeypatch, caplog, where):
    """Not the first read failing, but nothing left to restore: the file is kept aside, as a corrupt one is (the disk
    may read it again later)."""
    saved = save(tmp_path, prompts=4)
    start, end = {
        "header": (0, SECTOR),
        "every latent": (saved.file.latents_start, saved.path.stat().st_size - 32),
        "every vector": (saved.vectors_start(), saved.file.latents_start),
    }[where]
    fail_reads(monkeypatch, saved.path, start, end)
    assert load_logged(tmp_path, caplog) is None
    assert not saved.path.exists() and len(set_aside(tmp_path)) == 1
    [refusal] = warnings(caplog)
    assert refusal.startswith("refused the saved prompt cache") and "Input/output error" in refusal


def test_a_foreign_file_is_set_aside_whatever_its_sectors(tmp_path, monkeypatch, caplog):
    saved = save(tmp_path, prompts=40)
    start = sector_at(saved.file.latents_start + 100 * 512)
    fail_reads(monkeypatch, saved.path, start, start + SECTOR)
    assert load_logged(tmp_path, caplog, model="tiny:fedcba9876543210") is None
    assert len(set_aside(tmp_path)) == 1
    assert "this cache uses embedder 'hash', dim 1024" in warnings(caplog)[0]


def test_a_checksum_a_failed_read_left_unchecked_is_written_anew_even_with_every_latent_read(tmp_path, monkeypatch):
    """The file's last sector holds its digest: with it unreadable, every latent still reads, and is restored."""
    saved = save(tmp_path, prompts=4)
    end = saved.path.stat().st_size
    fail_reads(monkeypatch, saved.path, end - 32, end)
    cache = load(tmp_path)
    try:
        assert cache.stats().entries == 20
        assert cache.changes > 0  # so the next checkpoint writes it, with a digest that reads
    finally:
        cache.close()


def request(text: str) -> SimpleNamespace:
    return SimpleNamespace(
        spec=Generate(request_id="r", prompt=text), steps=SHAPE.steps, width=64, height=64, seeds=[0]
    )


def returned(latents: dict[int, np.ndarray]) -> Returned:
    levels = sorted(latents)
    done = ItemDone("j0", Blob(b"image"), 0, levels, np.stack([latents[k] for k in levels]), 1.0, SHAPE.steps)
    return Returned(done, "local-0", 0, LATENT_SHAPE)


def take_level_5(lookup, images, steps, rng) -> Choice:
    return Choice(5, 5, 5) if lookup.similarity else Choice(0, 0, 0)


def test_the_next_checkpoint_writes_what_was_restored_as_a_whole_file(tmp_path, monkeypatch):
    """Restored as read, the cache held less than the file; taken for the file's equal, the checkpoint was skipped,
    and the file, its bad sector with it, stayed until the next insert."""
    saved = save(tmp_path, prompts=40)
    start = sector_at(saved.file.latents_start + 100 * 512)
    lost = saved.latents_in(start, start + SECTOR)
    fail_reads(monkeypatch, saved.path, start, start + SECTOR)
    service = build_cache_service(CacheConfig(directory=str(tmp_path)), MODEL, LEVELS, choose=take_level_5)

    async def restore_and_checkpoint() -> None:
        while service.restoring:
            await asyncio.sleep(0.01)
        await service.checkpoint(str(tmp_path))
        await service.close(save_to=None)

    asyncio.run(asyncio.wait_for(restore_and_checkpoint(), timeout=60))
    rewritten = persistence.read_cache_file(saved.path, "hash", EMBEDDER.dim, LEVELS, MODEL)  # whole: digest checked
    assert rewritten.read_error is None
    kept = {(latent.prompt_id, latent.level) for latent in rewritten.latents}
    assert kept == {(latent.prompt_id, latent.level) for latent in saved.file.latents} - lost
    assert set_aside(tmp_path) == []


def test_a_hit_whose_spill_file_cannot_be_read_is_served_as_a_miss_and_the_cache_serves_on(tmp_path, monkeypatch):
    """The restore reads the whole file at the start; later, hits read latents from spill files. One the disk fails
    is evicted and its request runs in full, as a miss; the cache thread goes on serving the others."""
    made = [prompt(i) for i in range(3)]  # the first two spilled: memory holds their prompts and one latent
    memory = room(512, made, EMBEDDER.dim, LEVELS)
    service = build_cache_service(
        CacheConfig(directory=str(tmp_path), max_bytes=memory, directory_bytes=1 << 20),
        MODEL,
        LEVELS,
        choose=take_level_5,
    )

    async def hit_a_bad_spill_file() -> None:
        for i, text in enumerate(made):
            service.insert(request(text), EMBEDDER.embed([text])[0], returned({5: latent(i, 5)}))
        await service.stats()
        [spilled] = tmp_path.glob("spill/argus-spill-*/1_5_*.latent")
        fail_reads(monkeypatch, spilled, 0, SECTOR)
        first = await served(service, made[0])
        assert (first.similarity, first.level, first.latent) == (pytest.approx(1.0), 0, None)
        second = await served(service, made[1])  # spilled too, its file whole
        assert second.level == 5
        np.testing.assert_array_equal(second.latent, latent(1, 5))
        stats = await service.stats()
        assert (stats.prompts, stats.evictions, stats.misses) == (2, 1, 1)
        await service.close(save_to=None)

    asyncio.run(asyncio.wait_for(hit_a_bad_spill_file(), timeout=60))


def test_an_engine_restarted_on_a_file_with_a_bad_sector_serves_the_rest_and_saves_it_whole(tmp_path, monkeypatch):
    """Through a real engine, whose reads of the file fail in one sector (tests/bad_sectors.py): before, it set the
    whole file aside and served all 200 saved prompts as misses."""
    cache_dir = tmp_path / "cache"
    saved = save(cache_dir, prompts=200, model=SIM_MODEL, shape=SIM_LATENT_SHAPE)  # 32 bytes a latent
    start = sector_at(saved.file.latents_start + 500 * 32)
    lost = saved.latents_in(start, start + SECTOR)
    gone = sorted(prompt_id for prompt_id in {key[0] for key in lost} if all((prompt_id, k) in lost for k in LEVELS))
    assert len(gone) > 20
    for name, value in engine_environment(BadSector.of(saved.path, start, start + SECTOR)).items():
        monkeypatch.setenv(name, value)
    engine = start_engine_on(tmp_path, cache_dir)
    try:
        with ArgusClient(engine.client_address, timeout_s=60) as client:
            kept = client.generate(prompt(0), width=64, height=64, seed=1)
            lost_prompt = client.generate(prompt(gone[0] - 1), width=64, height=64, seed=1)
    finally:
        assert engine.stop() == 0
    assert isinstance(kept, Images) and kept.images[0].similarity == pytest.approx(1.0), kept
    assert isinstance(lost_prompt, Images) and lost_prompt.images[0].similarity != pytest.approx(1.0), lost_prompt
    log = engine.log_path.read_text()
    assert f"{len(lost)} of 1000 saved latents could not be read from {saved.path}" in log
    assert set_aside(cache_dir) == []
    # the drain's save wrote the file anew, whole: the restored latents, and what the lost prompt's run brought
    rewritten = persistence.read_cache_file(saved.path, "hash", EMBEDDER.dim, LEVELS, SIM_MODEL)
    assert rewritten.read_error is None
    assert len(rewritten.prompts) == 200 - len(gone) + 1


def test_a_saved_cache_deleted_as_the_engine_read_it_starts_it_empty(tmp_path, caplog, monkeypatch):
    """Deleted between the check that it is there and its read: setting the missing file aside raised, which counted
    as a failed restore, after which the engine never saved its cache (a file that may be good is not saved over)."""
    saved = save(tmp_path, 1).path
    saved.unlink()
    monkeypatch.setattr(os.path, "exists", lambda path: path == str(saved) or Path(path).exists())
    assert load_logged(tmp_path, caplog) is None
    assert f"the saved prompt cache {saved} went as it was read (no saved cache at {saved})" in caplog.text
    assert set_aside(tmp_path) == []
