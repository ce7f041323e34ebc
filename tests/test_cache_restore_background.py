"""The saved cache is read after the doors open: requests are served meanwhile (from what was cached since the
start), what they bring joins the restored cache, and no checkpoint writes a cache that lacks the file's contents.
Before, the engine restored it before binding its port: a 1 GiB save (the default --cache-bytes) kept even /health
unanswered for 6 s."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
from cache_room import room
from test_cache_warm_restart import generate, start

from controller.level_shares import Choice
from engine.cache import persistence
from engine.cache import service as cache_service
from engine.cache.embedders import HashEmbedder
from engine.cache.preparation import Preparation
from engine.cache.prompt_cache import PromptCache, ShapeKey
from engine.cache.service import Returned, build_cache_service
from engine.config import CacheConfig
from protocols.client_messages import Generate
from protocols.codec import Blob
from protocols.worker_messages import ItemDone

LEVELS = (5, 10, 15, 20, 25)
SHAPE = ShapeKey(50, 64, 64)
LATENT = np.zeros((4, 8, 8), dtype=np.float16)
EMBEDDER = HashEmbedder()
MODEL = "tiny:0123456789abcdef"  # its workers take LATENT at 64x64: a restore leaves out latents of another shape


def request(prompt: str) -> SimpleNamespace:
    return SimpleNamespace(
        spec=Generate(request_id="r", prompt=prompt), steps=SHAPE.steps, width=64, height=64, seeds=[0]
    )


def returned(latents: dict[int, np.ndarray], shape: tuple[int, int, int] = LATENT.shape) -> Returned:
    """What a worker's run from level 0 brings back, latents by level, as the engine hands it to the cache (`shape`:
    what the worker's backend makes)."""
    levels = sorted(latents)
    done = ItemDone("j0", Blob(b"image"), 0, levels, np.stack([latents[k] for k in levels]), 1.0, SHAPE.steps)
    return Returned(done, "local-0", 0, shape)


def vector(prompt: str) -> np.ndarray:
    return EMBEDDER.embed([prompt])[0]


def take_level_5(lookup, images, steps, rng) -> Choice:
    return Choice(5, 5, 5) if lookup.similarity else Choice(0, 0, 0)


async def served(service, prompt: str) -> Preparation:
    """A request prepared, and its image made from what it was prepared with: counted then, as the engine does."""
    made = request(prompt)
    done = asyncio.get_running_loop().create_future()
    service.prepare(made, lambda _, preparation: done.set_result(preparation))
    preparation = await asyncio.wait_for(done, timeout=30)
    made.neighbour = preparation.neighbour
    service.count_start(made, preparation.start)
    return preparation


async def similarity(service, prompt: str) -> float | None:
    return (await served(service, prompt)).similarity


def file_identity(path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns


@pytest.fixture
def held_restore(monkeypatch):
    """The saved cache is read only once the returned event is set."""
    release = threading.Event()
    load = cache_service.load_saved_cache

    def held(*args):
        release.wait()
        return load(*args)

    monkeypatch.setattr(cache_service, "load_saved_cache", held)
    yield release
    release.set()  # a failed test must not leave the restore thread waiting


def test_requests_are_served_while_the_saved_cache_is_read_and_what_they_bring_joins_it(tmp_path, held_restore):
    saved = PromptCache("hash", EMBEDDER.dim, LEVELS, max_bytes=1 << 20, model=MODEL)
    for prompt in ("a red fox", "a blue whale"):
        saved.insert(prompt, vector(prompt), SHAPE, {5: LATENT})
    saved.save(str(tmp_path))
    saved.close()
    path = tmp_path / persistence.FILE_NAME
    before = file_identity(path)
    service = build_cache_service(CacheConfig(directory=str(tmp_path)), MODEL, LEVELS, choose=take_level_5)

    async def serve_through_the_restore() -> None:
        assert service.restoring
        assert await similarity(service, "a red fox") is None  # not restored yet: a miss, served at once
        service.insert(request("a cat"), vector("a cat"), returned({5: LATENT}))
        service.insert(request("a red fox"), vector("a red fox"), returned({5: LATENT, 10: LATENT}))
        await service.checkpoint(str(tmp_path))  # would write a cache lacking the file's prompts: skipped
        assert file_identity(path) == before
        held_restore.set()
        while service.restoring:
            await asyncio.sleep(0.01)
        for prompt in ("a red fox", "a blue whale", "a cat"):
            assert await similarity(service, prompt) == pytest.approx(1.0), prompt
        assert (await service.stats()).prompts == 3  # "a red fox" once, though both caches held it
        await service.close(save_to=str(tmp_path))

    asyncio.run(asyncio.wait_for(serve_through_the_restore(), timeout=60))
    saved = persistence.read_cache_file(path, "hash", EMBEDDER.dim, LEVELS, MODEL)
    texts = {p.prompt_id: p.text for p in saved.prompts}
    levels = {}
    for latent in saved.latents:
        levels.setdefault(texts[latent.prompt_id], set()).add(latent.level)
    # the restored latent of level 5 kept, level 10 added from the generation made while it was read
    assert levels == {"a red fox": {5, 10}, "a blue whale": {5}, "a cat": {5}}


def test_a_stop_while_the_saved_cache_is_read_waits_for_it_and_saves_both(tmp_path, held_restore):
    """Saved without waiting, the drain would have replaced the file with what the engine cached since it started."""
    saved = PromptCache("hash", EMBEDDER.dim, LEVELS, max_bytes=1 << 20, model=MODEL)
    saved.insert("a red fox", vector("a red fox"), SHAPE, {5: LATENT})
    saved.save(str(tmp_path))
    saved.close()
    service = build_cache_service(CacheConfig(directory=str(tmp_path)), MODEL, LEVELS, choose=take_level_5)

    async def stop_while_restoring() -> None:
        service.insert(request("a cat"), vector("a cat"), returned({5: LATENT}))
        stopping = asyncio.create_task(service.close(save_to=str(tmp_path)))
        await asyncio.sleep(0.1)  # a chance to reach the wait (the result is the same if it has not)
        held_restore.set()
        await stopping

    asyncio.run(asyncio.wait_for(stop_while_restoring(), timeout=60))
    saved = persistence.read_cache_file(tmp_path / persistence.FILE_NAME, "hash", EMBEDDER.dim, LEVELS, MODEL)
    assert sorted(p.text for p in saved.prompts) == ["a cat", "a red fox"]


def test_the_running_counts_never_fall_at_the_hand_over(tmp_path, held_restore):
    """/metrics shows hits, misses and evictions as counters: the evictions of the cache served while the file was
    read were dropped at the hand-over (16 fell to 0 here), which Prometheus takes for an engine restart."""
    saved = PromptCache("hash", EMBEDDER.dim, LEVELS, max_bytes=1 << 20, model=MODEL)
    saved.insert("a red fox", vector("a red fox"), SHAPE, {5: LATENT})
    saved.save(str(tmp_path))
    saved.close()
    config = CacheConfig(directory=str(tmp_path), max_bytes=4 * LATENT.nbytes)
    service = build_cache_service(config, MODEL, LEVELS, choose=take_level_5)

    async def evict_while_restoring() -> tuple:
        for i in range(10):
            service.insert(request(f"prompt {i}"), vector(f"prompt {i}"), returned({5: LATENT, 10: LATENT}))
        await similarity(service, "a blue whale")  # a miss
        before = await service.stats()
        held_restore.set()
        while service.restoring:
            await asyncio.sleep(0.01)
        after = await service.stats()
        await service.close(save_to=None)
        return before, after

    before, after = asyncio.run(asyncio.wait_for(evict_while_restoring(), timeout=60))
    assert before.evictions > 0 and before.misses == 1
    assert after.evictions >= before.evictions and after.misses >= before.misses
    assert all(after.hits_by_level[k] >= n for k, n in before.hits_by_level.items())


def test_an_engine_answers_while_its_saved_cache_is_read(tmp_path):
    """A FIFO in the saved cache's place holds the restore for as long as the test needs (it blocks until written):
    before, the engine answered nothing, not even /health, until it was."""
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    fifo = cache_dir / persistence.FILE_NAME
    os.mkfifo(fifo)
    engine = start(tmp_path, cache_dir, wait=False)
    try:
        status = engine.wait_ready(1, timeout_s=120, restored=False)
        assert status["ready"] and status["cache_restoring"]
        assert engine.get("/health")[0] == 200
        assert generate(engine).images[0].similarity is None  # served meanwhile, as a miss
        with open(fifo, "wb"):
            pass  # the restore reads an empty file: refused, set aside
        assert not engine.wait_ready(1)["cache_restoring"]
        assert generate(engine).images[0].similarity == pytest.approx(1.0)  # what it made meanwhile was kept
    finally:
        with contextlib.suppress(OSError):  # not read yet (a failed test): unblock the restore, so the drain ends
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert engine.stop() == 0
    [_set_aside] = cache_dir.glob(f"{persistence.FILE_NAME}.rejected-*")


def test_a_restored_cache_given_up_at_the_hand_over_is_let_go(tmp_path, held_restore, monkeypatch):
    """A hand-over that fails (a bug, no memory) serves on from the cache it had. Before, the finished restore's
    future kept the restored cache it was given up on, with the latents it held in memory (up to --cache-bytes),
    for as long as the engine ran."""
    saved = PromptCache("hash", EMBEDDER.dim, LEVELS, max_bytes=1 << 20, model=MODEL)
    saved.insert("a red fox", vector("a red fox"), SHAPE, {5: LATENT})
    saved.save(str(tmp_path))
    saved.close()
    restored = []
    load = cache_service.load_saved_cache

    def load_and_watch(*args):
        cache = load(*args)
        restored.append(weakref.ref(cache))
        return cache

    def fail(self, newer):
        raise MemoryError("no memory for the hand-over")

    monkeypatch.setattr(cache_service, "load_saved_cache", load_and_watch)
    monkeypatch.setattr(PromptCache, "absorb", fail)
    # pytest keeps the records it captures, and the logged traceback's frames hold the restored cache
    monkeypatch.setattr(logging.getLogger("argus.cache"), "propagate", False)
    service = build_cache_service(CacheConfig(directory=str(tmp_path)), MODEL, LEVELS, choose=take_level_5)

    async def give_up_the_restore() -> None:
        service.insert(request("a cat"), vector("a cat"), returned({5: LATENT}))
        held_restore.set()
        while service.restoring:
            await asyncio.sleep(0.01)
        assert await similarity(service, "a cat") == pytest.approx(1.0)  # served from the cache it had
        gc.collect()
        [held] = restored
        assert held() is None
        await service.close(save_to=str(tmp_path))

    asyncio.run(asyncio.wait_for(give_up_the_restore(), timeout=60))


def directory_sized_latent(tmp_path) -> np.ndarray:
    """A latent of the size of a directory on tmp_path's filesystem (4 KiB on ext4): a directory in place of its spill
    file passes the check by size, and only reading it fails."""
    probe = tmp_path / "probe"
    probe.mkdir()
    size = probe.stat().st_size
    probe.rmdir()
    if size < 2 or size % 2:
        pytest.skip(f"a directory here is {size} bytes, which no float16 latent is")
    return np.zeros((1, 1, size // 2), np.float16)


@pytest.mark.parametrize("damage", ["nan", "directory"])
def test_a_damaged_spill_file_at_the_hand_over_is_left_out_and_later_saves_work(tmp_path, held_restore, damage):
    """At the hand-over, what generations brought while the saved cache was read is read back, spilled latents from
    their files, and inserted into the restored cache. One damaged (NaN written over it; a directory of its size in
    its place) raised there: the engine served on without the restored cache and, taking its file for a good one it
    could not restore, never saved over it again, for its life."""
    latent = LATENT if damage == "nan" else directory_sized_latent(tmp_path)
    saved = PromptCache("hash", EMBEDDER.dim, LEVELS, max_bytes=1 << 20, model=MODEL)
    saved.insert("a blue whale", vector("a blue whale"), SHAPE, {5: LATENT})
    saved.save(str(tmp_path))
    saved.close()
    made = ("a cat", "a dog", "a red fox")  # the first two spilled: memory holds their prompts and one latent
    memory = room(latent.nbytes, made, EMBEDDER.dim, LEVELS)
    config = CacheConfig(directory=str(tmp_path), max_bytes=memory, directory_bytes=1 << 20)
    service = build_cache_service(config, MODEL, LEVELS, choose=take_level_5)

    async def hand_over_and_save() -> None:
        for prompt in made:
            service.insert(request(prompt), vector(prompt), returned({5: latent}, latent.shape))
        await service.stats()  # inserted
        [cat] = tmp_path.glob("spill/argus-spill-*/1_5_*.latent")
        if damage == "nan":
            cat.write_bytes(b"\xff" * cat.stat().st_size)
        else:
            cat.unlink()
            cat.mkdir()
        held_restore.set()
        while service.restoring:
            await asyncio.sleep(0.01)
        assert await similarity(service, "a blue whale") == pytest.approx(1.0)  # the restored cache serves
        assert await similarity(service, "a cat") != pytest.approx(1.0)  # left out
        for prompt in made[1:]:
            assert await similarity(service, prompt) == pytest.approx(1.0), prompt
        await service.close(save_to=str(tmp_path))

    asyncio.run(asyncio.wait_for(hand_over_and_save(), timeout=60))
    saved = persistence.read_cache_file(tmp_path / persistence.FILE_NAME, "hash", EMBEDDER.dim, LEVELS, MODEL)
    assert sorted(p.text for p in saved.prompts) == ["a blue whale", "a dog", "a red fox"]
