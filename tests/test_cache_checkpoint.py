"""--cache-save-interval: the cache is saved while the engine runs, so an engine killed (SIGKILL, the OOM killer, a
crash) restarts warm. Before, it was saved only at a clean drain, and a kill lost all of it.

A save is a snapshot taken on the cache thread and written on a thread of its own: before, it was written on the
cache thread, and every lookup waited for the whole write (1 GiB: 2 to 3 s)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
from cache_room import room
from test_cache_index import hnswlib_copies_refused, unit_rows
from test_cache_restore_background import (
    EMBEDDER,
    LATENT,
    LEVELS,
    MODEL,
    SHAPE,
    directory_sized_latent,
    file_identity,
    request,
    returned,
    similarity,
    vector,
)
from test_cache_restore_background import take_level_5 as choose
from test_cache_warm_restart import assert_a_restart_finds_it, generate, start
from waiting import wait_for

from controller.level_shares import Choice
from engine.cache import persistence
from engine.cache.index import GRAPH_ABOVE
from engine.cache.prompt_cache import PromptCache, ShapeKey
from engine.cache.service import build_cache_service
from engine.client import ArgusClient
from engine.config import CacheConfig
from engine_process import start_engine


def test_an_engine_killed_after_a_checkpoint_restarts_from_it(tmp_path):
    cache_dir = tmp_path / "cache"
    first = start(tmp_path, cache_dir, "--cache-save-interval", "0.2")
    try:
        assert generate(first).images[0].similarity is None
        # "1 prompt in": with "1 prompts", a line never written, this waited out its 60 s and went on unchecked
        saved = f"prompt cache checkpointed to {cache_dir}: 1 prompt in"
        assert wait_for(lambda: saved in first.log_path.read_text(), timeout_s=60), first.log()
        assert first.metric("argus_cache_checkpoints_total", outcome="written") >= 1
        assert first.metric("argus_cache_checkpoints_total", outcome="failed") == 0
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


def test_a_saved_cache_deleted_after_the_last_checkpoint_is_written_again(tmp_path):
    """A hand or a tmp cleaner deleting the file of an engine with nothing new since its last checkpoint: each later
    checkpoint, and the drain's save, was skipped (the cache unchanged), and the next engine started cold."""
    cache_dir = tmp_path / "cache"
    first = start(tmp_path, cache_dir, "--cache-save-interval", "0.2")
    try:
        generate(first)
        saved = f"prompt cache checkpointed to {cache_dir}: 1 prompt in"
        assert wait_for(lambda: saved in first.log_path.read_text(), timeout_s=60), first.log()
        (cache_dir / persistence.FILE_NAME).unlink()
    finally:
        assert first.stop() == 0
    assert_a_restart_finds_it(tmp_path, cache_dir)
    assert first.log().count(f"the saved prompt cache in {cache_dir} was deleted or changed") == 1, first.log()


def test_a_restored_file_deleted_under_an_engine_is_saved_at_its_close(tmp_path):
    """The restored cache is taken for its file's equal: with nothing new, the close's save was skipped."""
    config = CacheConfig(directory=str(tmp_path))
    path = tmp_path / persistence.FILE_NAME

    async def save_restore_and_close() -> None:
        first = build_cache_service(config, MODEL, LEVELS, choose=choose)
        first.insert(request("a red fox"), vector("a red fox"), returned({5: LATENT}))
        await first.close(save_to=str(tmp_path))
        second = build_cache_service(config, MODEL, LEVELS, choose=choose)
        while second.restoring:
            await asyncio.sleep(0.01)
        assert (await second.stats()).prompts == 1
        path.unlink()
        await second.close(save_to=str(tmp_path))

    asyncio.run(asyncio.wait_for(save_restore_and_close(), timeout=60))
    assert [p.text for p in persistence.read_cache_file(path, "hash", EMBEDDER.dim, LEVELS, MODEL).prompts] == [
        "a red fox"
    ]


@pytest.fixture
def held_write(monkeypatch):
    """Each save's write, once begun, waits until the test lets it go: the events say in which order things came.
    Bounded, so that where lookups wait for the write (as they did) the test fails on the order, not by hanging."""
    held = SimpleNamespace(begun=threading.Event(), release=threading.Event(), events=[])
    write = persistence.write_cache_file

    def held_back(*args, **kwargs):
        held.begun.set()
        held.release.wait(timeout=20)
        held.events.append("written")
        return write(*args, **kwargs)

    monkeypatch.setattr(persistence, "write_cache_file", held_back)
    yield held
    held.release.set()  # a failed test must not leave the save thread waiting


def saved_prompts(directory) -> dict[str, int]:
    """The saved cache's prompts, with the uses of their latent of level 5."""
    saved = persistence.read_cache_file(directory / persistence.FILE_NAME, "hash", EMBEDDER.dim, LEVELS, MODEL)
    texts = {p.prompt_id: p.text for p in saved.prompts}
    return {texts[latent.prompt_id]: latent.uses for latent in saved.latents if latent.level == 5}


def test_lookups_and_inserts_go_on_while_a_checkpoint_is_written(tmp_path, held_write):
    """The file holds the cache as it was when the checkpoint began; what came while it was written, the next."""
    service = build_cache_service(CacheConfig(directory=str(tmp_path)), MODEL, LEVELS, choose=choose)

    async def serve_through_a_checkpoint() -> None:
        service.insert(request("a red fox"), vector("a red fox"), returned({5: LATENT}))
        checkpoint = asyncio.create_task(service.checkpoint(str(tmp_path)))
        assert await asyncio.to_thread(held_write.begun.wait, 30)
        assert await similarity(service, "a red fox") == pytest.approx(1.0)  # a hit, on the cache thread
        service.insert(request("a cat"), vector("a cat"), returned({5: LATENT}))
        assert (await service.stats()).prompts == 2
        held_write.events.append("answered")
        held_write.release.set()
        await checkpoint
        assert held_write.events == ["answered", "written"]  # before: the lookup waited for the whole write
        assert saved_prompts(tmp_path) == {"a red fox": 0}  # neither the hit nor the cat: they came after
        await service.checkpoint(str(tmp_path))
        assert saved_prompts(tmp_path) == {"a red fox": 1, "a cat": 0}
        await service.close(save_to=str(tmp_path))

    asyncio.run(asyncio.wait_for(serve_through_a_checkpoint(), timeout=60))


def test_a_checkpoint_due_while_one_is_written_is_skipped_and_the_drain_saves_after_it(tmp_path, held_write):
    """Never two writers of one file, and the drain's save, which waits for the one being written, holds what came
    after it."""
    service = build_cache_service(CacheConfig(directory=str(tmp_path)), MODEL, LEVELS, choose=choose)

    async def stop_while_a_checkpoint_is_written() -> None:
        service.insert(request("a red fox"), vector("a red fox"), returned({5: LATENT}))
        first = asyncio.create_task(service.checkpoint(str(tmp_path)))
        assert await asyncio.to_thread(held_write.begun.wait, 30)
        await service.checkpoint(str(tmp_path))  # skipped: before, it waited behind the first, as lookups did
        held_write.events.append("second checkpoint returned")
        service.insert(request("a cat"), vector("a cat"), returned({5: LATENT}))
        stopping = asyncio.create_task(service.close(save_to=str(tmp_path)))
        await asyncio.sleep(0.1)  # a chance to reach the wait (the result is the same if it has not)
        held_write.release.set()
        await first
        await stopping

    asyncio.run(asyncio.wait_for(stop_while_a_checkpoint_is_written(), timeout=60))
    assert held_write.events == ["second checkpoint returned", "written", "written"]
    assert saved_prompts(tmp_path) == {"a red fox": 0, "a cat": 0}


def test_a_snapshot_is_written_whole_though_its_latents_leave_the_cache_meanwhile(tmp_path):
    """A latent in memory is shared with the snapshot (no copy); a spilled one's file is kept until the release,
    though evicted meanwhile, and then deleted."""
    spill = tmp_path / "spill"
    memory = room(LATENT.nbytes, [f"prompt {i}" for i in range(3)], EMBEDDER.dim, LEVELS)  # 3 prompts, 1 latent
    cache = PromptCache(
        "hash", EMBEDDER.dim, LEVELS, max_bytes=memory, spill_dir=str(spill), spill_bytes=2 * LATENT.nbytes
    )
    cache.model = MODEL

    def insert(i: int) -> None:
        cache.insert(f"prompt {i}", vector(f"prompt {i}"), SHAPE, {5: np.full_like(LATENT, i)})

    for i in range(3):
        insert(i)  # prompt 2 in memory, 0 and 1 spilled
    snapshot = cache.snapshot()
    for i in (3, 4):
        insert(i)  # 2 spills, 0 and 1 are evicted for good
    assert sorted(snapshot.prompts[i].text for i in snapshot.prompt_ids) == ["prompt 0", "prompt 1", "prompt 2"]
    [folder] = spill.iterdir()
    assert len(list(folder.iterdir())) == 4  # 2 and 3, and the evicted files the snapshot names
    snapshot.write(str(tmp_path / "saved"))
    snapshot.release()
    assert len(list(folder.iterdir())) == 2
    # emptied a table at a time, each freed by a call of its own: freed in one go, they held the GIL 7 to 30 ms
    assert not (snapshot.prompts or snapshot.prompt_ids or snapshot.store.entries or snapshot.store.records)
    restored = PromptCache.load(str(tmp_path / "saved"), "hash", EMBEDDER.dim, LEVELS, 1 << 20, model=MODEL)
    try:
        for i in range(3):
            neighbour = restored.lookup(vector(f"prompt {i}"), SHAPE)
            assert neighbour.prompt == f"prompt {i}"
            np.testing.assert_array_equal(restored.take_latent(neighbour.prompt_id, 5), np.full_like(LATENT, i))
    finally:
        restored.close()
        cache.close()


def test_a_snapshot_of_a_graph_holds_its_vectors_as_they_were_and_reads_none_from_hnswlib(monkeypatch):
    """hnswlib hands its vectors back holding the GIL (its pickle state copies the whole graph): a checkpoint of 20,000
    prompts of 1024 dims paused the engine's event loop 54 to 158 ms. They are copied from the matrix kept beside the
    graph, which the cache goes on changing: an evicted prompt's row takes the matrix's last."""
    held = GRAPH_ABOVE + 64
    small = np.zeros((4, 8, 8), np.float16)
    texts = [f"prompt {i:04d}" for i in range(held + 100)]  # of one length: each new prompt takes an old one's room
    cache = PromptCache("hash", 16, [1], max_bytes=room(held * small.nbytes, texts[:held], 16, [1]))
    vectors = unit_rows(held + 100, 16)

    def insert(i: int) -> None:
        cache.insert(texts[i], vectors[i], SHAPE, {1: small})

    try:
        for i in range(held):
            insert(i)
        with monkeypatch.context() as patched:
            hnswlib_copies_refused(patched)
            snapshot = cache.snapshot()
        for i in range(held, held + 100):
            insert(i)  # each evicts the oldest prompt
        assert cache.stats().prompts == held and cache.stats().evictions == 100
        assert [snapshot.prompts[i].text for i in snapshot.prompt_ids] == texts[:held]
        np.testing.assert_allclose(snapshot.vectors, vectors[:held], rtol=1e-6)
        snapshot.release()
    finally:
        cache.close()


def test_a_snapshot_puts_each_prompts_vector_in_its_row_across_shapes_and_evictions():
    """Row i of the vectors is the vector of prompt_ids[i], ascending, gathered from each shape's matrix, whose rows an
    eviction reorders (the matrix's last row fills the evicted one's)."""
    small = np.zeros((4, 8, 8), np.float16)
    shapes = [ShapeKey(50, 64, 64), ShapeKey(30, 96, 64), ShapeKey(20, 64, 96)]
    texts = [f"prompt {i:02d}" for i in range(30)]
    cache = PromptCache("hash", 16, [1], max_bytes=room(24 * small.nbytes, texts[:24], 16, [1]))
    empty = cache.snapshot()
    assert empty.prompt_ids == [] and empty.vectors.shape == (0, 16)
    empty.release()
    vectors = unit_rows(30, 16)
    try:
        for i in range(30):  # the first 6 are evicted, the oldest first
            cache.insert(texts[i], vectors[i], shapes[i % 3], {1: small})
        snapshot = cache.snapshot()
        assert [snapshot.prompts[i].text for i in snapshot.prompt_ids] == texts[6:]
        assert snapshot.vectors.shape == (24, 16)
        np.testing.assert_allclose(snapshot.vectors, vectors[6:], rtol=1e-6)
        snapshot.release()
    finally:
        cache.close()


def test_a_written_checkpoint_lets_go_of_the_latents_that_leave_the_cache_after_it(tmp_path):
    """The budget holds after a checkpoint. Before, the finished write's future kept the snapshot (its done callback
    named it) until the next checkpoint, and with it every latent in memory when it was taken: those evicted after
    it stayed in memory, up to --cache-bytes more for 300 s (measured: 32 MiB evicted of a 32 MiB cache, all alive)."""

    def miss_keeping_level_5(lookup, images, steps, rng) -> Choice:
        return Choice(5, 0, 0)  # served in full, no hit: the neighbour's latent of level 5 is handed on as a fallback

    service = build_cache_service(
        CacheConfig(directory=str(tmp_path), max_bytes=room(LATENT.nbytes, ["a red fox"], EMBEDDER.dim, LEVELS)),
        MODEL,
        LEVELS,
        choose=miss_keeping_level_5,
        fallback_levels=lambda k_star, level, levels, steps: ((5, 5),),
    )

    async def stored_latent(prompt: str) -> weakref.ref:
        done = asyncio.get_running_loop().create_future()
        service.prepare(request(prompt), lambda _, preparation: done.set_result(preparation))
        [fallback] = (await done).fallbacks
        return weakref.ref(fallback.latent)  # the store's own array (no copy)

    async def evict_after_a_checkpoint() -> None:
        service.insert(request("a red fox"), vector("a red fox"), returned({5: LATENT}))
        held = await stored_latent("a red fox")
        await service.checkpoint(str(tmp_path))
        service.insert(request("a cat"), vector("a cat"), returned({5: LATENT}))  # evicts the fox's latent
        assert (await service.stats()).evictions == 1
        gc.collect()
        assert held() is None
        await service.close(save_to=None)

    asyncio.run(asyncio.wait_for(evict_after_a_checkpoint(), timeout=60))


def test_a_spill_file_that_cannot_be_read_is_left_out_and_later_checkpoints_are_written(tmp_path):
    """A directory in place of a spill file, of its size (4 KiB on ext4: a latent of SD-XL's shape at 256x128), passes
    the check by size and fails the read. Before, it failed the checkpoint, and, never evicted, every later one and the
    drain's save (12 checkpoints of 12, one a second), for the engine's life. Sim workers passing latents of that shape
    (--sim-latents sdxl, as the tiny model's): what is checked is the engine's cache, not what a model makes."""
    if directory_sized_latent(tmp_path).shape != (1, 1, 2048):
        pytest.skip("a directory here is not the size of a 256x128 latent")
    cache_dir = tmp_path / "cache"
    fox, whale = "a red fox in the snow", "a blue whale under the sea"
    memory = room(4096, [fox, whale], EMBEDDER.dim, LEVELS)  # their prompts, and one latent
    flags = ("--cache-bytes", str(memory), "--cache-dir-bytes", "1000000", "--cache-save-interval", "0.2")
    sim = ("--sim-latents", "sdxl", "--time-scale", "0", "--policy", "nirvana")  # nirvana: a repeat is a hit
    engine = start_engine(tmp_path, "--cache-dir", str(cache_dir), *flags, *sim, backend="sim", workers=1)

    def checkpoints(prompts: str = "") -> int:
        return engine.log_path.read_text().count(f"prompt cache checkpointed to {cache_dir}: {prompts}")

    def checkpointed(prompts: str = "", after: int = 0) -> None:
        deadline = time.monotonic() + 60
        while checkpoints(prompts) <= after:
            assert time.monotonic() < deadline, engine.log()
            time.sleep(0.05)

    try:
        with ArgusClient(engine.client_address, timeout_s=60) as client:
            # 11 steps: cached at step 5 alone (step 10 is past any level's share of the run), 4 KiB; memory holds
            # one, so the first prompt's is spilled
            for prompt in (fox, whale):
                client.generate(prompt, width=256, height=128, seed=1, steps=11)
            checkpointed("2 prompts")
            spilled = sorted(cache_dir.glob("spill/argus-spill-*/*.latent"))[0]
            spilled.unlink()
            spilled.mkdir()
            before = checkpoints()
            # a hit on the whale's latent, in memory: a change, which the next checkpoint saves (a new prompt would
            # take its room in memory from the fox's, evicted, the lowest ranked)
            client.generate(whale, width=256, height=128, seed=1, steps=11)
            checkpointed(after=before)
    finally:
        assert engine.stop() == 0
    log = engine.log_path.read_text()
    assert "could not be read" in log and "the save is written again without it" in log
