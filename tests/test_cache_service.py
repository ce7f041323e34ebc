"""The cache service's ends: opening the cache saved in its directory, and closing (save, then always close
the cache and stop its thread)."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import shutil
import stat
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from cache_room import room
from tiny_models import save_tiny_clip_text

from controller.level_shares import Choice
from engine.cache import cache_dir, persistence
from engine.cache.cache_dir import load_saved_cache, new_prompt_cache, remove_leftovers
from engine.cache.embedders import HashEmbedder, make_embedder
from engine.cache.prompt_cache import PromptCache, ShapeKey
from engine.cache.service import CacheService, Returned, build_cache_service
from engine.commands.arg_types import UsageError
from engine.config import CacheConfig
from protocols.client_messages import Generate
from protocols.codec import Blob
from protocols.worker_messages import ItemDone

IN_FULL = Choice(0, 0, 0)  # the controller's choice of a miss

LEVELS = (5, 10, 15, 20, 25)
SHAPE = ShapeKey(50, 64, 64)
LATENT = np.zeros((4, 8, 8), dtype=np.float16)
EMBEDDER = HashEmbedder()
MODEL = "tiny:0123456789abcdef"


def save_a_cache(directory, prompts: int) -> None:
    cache = PromptCache("hash", EMBEDDER.dim, LEVELS, max_bytes=1 << 30, model=MODEL)
    for i in range(prompts):
        cache.insert(f"prompt {i}", EMBEDDER.embed([f"prompt {i}"])[0], SHAPE, {5: LATENT})
    cache.save(str(directory))
    cache.close()


def test_a_start_removes_what_an_engine_that_died_left_in_its_directory(tmp_path):
    """Before, every crash left its spill folder (up to directory_bytes) for good."""
    save_a_cache(tmp_path, prompts=3)
    dead_spill = tmp_path / "spill" / "argus-spill-dead"
    dead_spill.mkdir(parents=True)
    (dead_spill / "1_5.latent").write_bytes(LATENT.tobytes())
    (tmp_path / "prompt_cache.argus.tmp-4242").write_bytes(b"a save cut short")
    (tmp_path / "prompt_cache.argus.tmp-made-by-hand").mkdir()  # before, IsADirectoryError ended the start
    (tmp_path / "notes.txt").write_text("not the cache's")
    config = CacheConfig(directory=str(tmp_path), directory_bytes=4096)
    remove_leftovers(str(tmp_path))
    cache = load_saved_cache(config, MODEL, EMBEDDER, LEVELS)
    try:
        assert cache.stats().prompts == 3  # the last save is kept and loaded
        assert sorted(path.name for path in tmp_path.iterdir()) == [
            "notes.txt",
            "prompt_cache.argus",
            "prompt_cache.argus.tmp-made-by-hand",
            "spill",
        ]
        [own_spill] = (tmp_path / "spill").iterdir()
        assert own_spill != dead_spill
    finally:
        cache.close()


def test_leftovers_this_user_cannot_delete_are_said_so_not_said_removed(tmp_path, monkeypatch, caplog):
    """Before, a spill folder another user left (a run as root) was logged as removed, and stayed for good."""
    dead_spill = tmp_path / "spill" / "argus-spill-dead"
    dead_spill.mkdir(parents=True)
    (tmp_path / "prompt_cache.argus.tmp-4242").write_bytes(b"a save cut short")
    monkeypatch.setattr(cache_dir.shutil, "rmtree", lambda path, ignore_errors: None)  # as a folder not ours is
    with caplog.at_level(logging.WARNING, logger="argus.cache"):
        remove_leftovers(str(tmp_path))
    assert [record.getMessage() for record in caplog.records] == [
        f"removed 0 spill folders and 1 unfinished save left in {tmp_path}",
        f"could not remove 1 spill folder or unfinished save left in {tmp_path} ({dead_spill} the first): they"
        " take disk space until deleted by hand",
    ]


def test_a_spill_folder_that_cannot_be_made_is_one_line(tmp_path):
    """Before, a `spill` the engine could not make its folder in (another user's, read-only, a file) ended the engine's
    start in a traceback: lock_cache_dir checked the folder above it only."""
    (tmp_path / "spill").write_text("")
    config = CacheConfig(directory=str(tmp_path), directory_bytes=4096)
    with pytest.raises(UsageError, match=f"--cache-dir {tmp_path}: cannot make a spill folder in it"):
        build_cache_service(config, MODEL, LEVELS, choose=lambda *_: IN_FULL)
    build_cache_service(CacheConfig(directory=str(tmp_path)), MODEL, LEVELS, choose=lambda *_: IN_FULL).abandon()


def test_a_cache_dir_the_engine_makes_is_its_users_alone_whatever_the_umask(tmp_path):
    """Under a umask of 000 it was made 0777: any user could rename a cache file of their own over the save (0600)."""
    umask = os.umask(0)
    try:
        config = CacheConfig(directory=str(tmp_path / "cache"))
        build_cache_service(config, MODEL, LEVELS, choose=lambda *_: IN_FULL).abandon()
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700


def test_a_cache_dir_on_a_file_system_that_takes_no_locks_is_one_line(tmp_path, monkeypatch):
    """An NFSv3 mount without its lock service answers a lock ENOLCK: it ended the engine's start in a traceback."""

    def no_lock_service(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_lock_service)
    config = CacheConfig(directory=str(tmp_path))
    with pytest.raises(UsageError, match=f"--cache-dir {tmp_path} cannot be locked \\(No locks available\\)"):
        build_cache_service(config, MODEL, LEVELS, choose=lambda *_: IN_FULL)


def test_a_cache_dir_with_less_room_than_the_cache_may_take_there_is_warned_of(tmp_path, caplog):
    """A --cache-dir-bytes (or --cache-bytes, saved whole) past the disk's room filled it: spills failed one by one,
    then every save did, without a word at the start."""
    caplog.set_level(logging.WARNING, "argus.cache")
    free = shutil.disk_usage(tmp_path).free
    roomy = CacheConfig(directory=str(tmp_path), max_bytes=1 << 20, directory_bytes=1 << 20)
    build_cache_service(roomy, MODEL, LEVELS, choose=lambda *_: IN_FULL).abandon()
    assert "free" not in caplog.text
    spilling_past_it = CacheConfig(directory=str(tmp_path), max_bytes=1 << 20, directory_bytes=free)
    build_cache_service(spilling_past_it, MODEL, LEVELS, choose=lambda *_: IN_FULL).abandon()
    assert f"--cache-dir {tmp_path} has " in caplog.text
    assert "Once it is full, spills and then saves fail" in caplog.text


def test_a_refused_file_is_set_aside_under_a_name_of_its_own(tmp_path):
    """Before, every refused file was renamed to .rejected: a restart with another embedder and back destroyed
    the first embedder's cache."""

    class OtherEmbedder:
        name = identity = "other"
        dim = 8

    save_a_cache(tmp_path, prompts=3)
    config = CacheConfig(directory=str(tmp_path))
    assert load_saved_cache(config, MODEL, OtherEmbedder(), LEVELS) is None  # refuses the hash cache
    other = new_prompt_cache(config, MODEL, OtherEmbedder(), LEVELS)
    other.insert("a dog", np.ones(8, dtype=np.float32), SHAPE, {5: LATENT})
    other.save(str(tmp_path))
    other.close()
    assert load_saved_cache(config, MODEL, EMBEDDER, LEVELS) is None  # refuses the other embedder's cache
    set_aside = sorted(tmp_path.glob("prompt_cache.argus.rejected-*"))
    assert len(set_aside) == 2 and not (tmp_path / "prompt_cache.argus").exists()
    first = persistence.read_cache_file(set_aside[0], "hash", EMBEDDER.dim, LEVELS, MODEL)  # the older name sorts first
    assert len(first.prompts) == 3


def test_a_cache_saved_with_another_embedder_model_of_the_same_width_is_set_aside_not_restored(tmp_path):
    """Before, the file recorded the embedder's name alone: a cache saved with one CLIP folder was restored under
    another of the same width, and an unrelated prompt was served from a cached prompt's latent (a real engine:
    "green frog oil painting" resumed at K = 10 from "a red fox on a cliff at dusk")."""
    save_tiny_clip_text(tmp_path / "clip-a", seed=0)
    save_tiny_clip_text(tmp_path / "clip-b", seed=1)
    shutil.copytree(tmp_path / "clip-a", tmp_path / "clip-a-moved")
    first, other, moved = (make_embedder("clip", str(tmp_path / name)) for name in ("clip-a", "clip-b", "clip-a-moved"))
    assert first.dim == other.dim and first.identity != other.identity
    assert moved.identity == first.identity  # by content: the same model at another path
    config = CacheConfig(directory=str(tmp_path / "cache"))
    cache = new_prompt_cache(config, MODEL, first, LEVELS)
    cache.insert("a red fox", first.embed(["a red fox"])[0], SHAPE, {5: LATENT})
    cache.save(config.directory)
    cache.close()

    assert load_saved_cache(config, MODEL, other, LEVELS) is None
    (aside,) = (tmp_path / "cache").glob("prompt_cache.argus.rejected-*")
    aside.rename(tmp_path / "cache" / "prompt_cache.argus")
    restored = load_saved_cache(config, MODEL, moved, LEVELS)
    try:
        assert restored.stats().prompts == 1
    finally:
        restored.close()


def test_a_failed_save_still_closes_the_cache_and_stops_the_thread(tmp_path):
    embedder = HashEmbedder()
    spill = str(tmp_path / "spill")
    memory = room(0, ["a cat"], embedder.dim, LEVELS)  # its prompt, its latent spilled
    cache = PromptCache("hash", embedder.dim, LEVELS, max_bytes=memory, spill_dir=spill, spill_bytes=4096, model=MODEL)
    cache.insert("a cat", embedder.embed(["a cat"])[0], SHAPE, {5: LATENT})
    service = CacheService(cache, embedder, choose=lambda *args: IN_FULL)
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")

    async def close_then_ask_for_stats():
        with pytest.raises(OSError):
            await service.close(save_to=str(not_a_directory))
        with pytest.raises(RuntimeError, match="shutdown"):  # the thread takes no more work
            await service.stats()

    asyncio.run(close_then_ask_for_stats())
    assert list((tmp_path / "spill").iterdir()) == []  # the cache was closed: its spill folder is gone


def test_what_a_generation_brings_while_the_model_is_adopted_goes_to_the_adopted_cache(tmp_path):
    """A request that waited for the first worker of an engine that could not name its model (tiny) brings its
    latents while the saved cache is restored. Before, the insert was bound to the cache being replaced when it
    was queued: the latents were lost with it, and the same prompt asked again was a miss."""
    save_a_cache(tmp_path, prompts=2000)  # restoring it takes a while
    service = build_cache_service(CacheConfig(directory=str(tmp_path)), "", LEVELS, choose=lambda *args: IN_FULL)
    request = SimpleNamespace(
        spec=Generate(request_id="r", prompt="a cat"), steps=SHAPE.steps, width=64, height=64, seeds=[0]
    )

    async def adopt_insert_and_stop() -> None:
        service.adopt_model(MODEL)
        done = ItemDone("j0", Blob(b"img"), 0, [5], LATENT[np.newaxis], 1.0, SHAPE.steps)
        service.insert(request, EMBEDDER.embed(["a cat"])[0], Returned(done, "w", 0, LATENT.shape))
        await service.close(save_to=str(tmp_path))  # the drain's save waits for the restore, and keeps both

    asyncio.run(adopt_insert_and_stop())
    saved = persistence.read_cache_file(tmp_path / persistence.FILE_NAME, "hash", EMBEDDER.dim, LEVELS, MODEL)
    assert len(saved.prompts) == 2001 and "a cat" in {p.text for p in saved.prompts}


def test_the_controller_is_told_each_requests_images_and_steps():
    """What it needs to weigh a request's demand: 150 steps are about three times the work of the default 50."""
    asked = []

    def choose(lookup, images, steps, rng):
        asked.append((images, steps))
        return IN_FULL

    service = CacheService(None, None, choose)  # --no-cache: decided at once, on the caller's thread
    request = SimpleNamespace(
        spec=Generate(request_id="r", prompt="a cat", n=3), steps=150, width=64, height=64, seeds=[0, 1, 2]
    )
    service.prepare(request, lambda *_: None)
    assert asked == [(3, 150)]


@pytest.mark.parametrize(
    ("choice", "ups", "up"),
    [
        (Choice(5, 5, 5), ((10, 10), (15, 15)), 10),
        # levels apart from the steps their latents are after, as at other than the default steps: the seeds are
        # those of the latents the image starts from
        (Choice(4, 4, 5), ((8, 10), (12, 15)), 8),
    ],
)
def test_a_latent_starts_the_image_of_its_runs_seed_and_none_moves_up_to_another_images(choice, ups, up):
    """Resumed from a run of its second image's seed, a request's first image was that seed's picture, twice in one
    response with the second's (docs/cache.md, A request's n images). `ups`: the levels an image may move up to, and
    the steps their latents are after; the second's is not cached."""
    service = build_cache_service(
        CacheConfig(), MODEL, LEVELS, choose=lambda *args: choice, fallback_levels=lambda *args: ups
    )

    def request(seeds: list[int]) -> SimpleNamespace:
        spec = Generate(request_id="r", prompt="a cat", n=len(seeds))
        return SimpleNamespace(spec=spec, steps=SHAPE.steps, width=64, height=64, seeds=seeds)

    async def prepared(seeds: list[int]) -> tuple[int, list[int]]:
        done = asyncio.get_running_loop().create_future()
        service.prepare(request(seeds), lambda _, preparation: done.set_result(preparation))
        preparation = await asyncio.wait_for(done, timeout=30)
        return preparation.resumer, [fallback.level for fallback in preparation.fallbacks]

    async def insert_then_prepare() -> list[tuple[int, list[int]]]:
        vector = EMBEDDER.embed(["a cat"])[0]
        # level 5 from a run of seed 3, then level 10, which the prompt lacked, from one of seed 1
        for level, seed in ((5, 3), (10, 1)):
            done = ItemDone(f"j{seed}", Blob(b"img"), 0, [level], LATENT[np.newaxis], 1.0, SHAPE.steps)
            service.insert(request([seed]), vector, Returned(done, "w", 0, LATENT.shape, seed))
        try:
            return [await prepared(seeds) for seeds in ([0, 1, 2], [3, 4], [1, 3], [1, 2])]
        finally:
            await service.close(save_to=None)

    # the last: the image of seed 1 may move up to a latent of its own seed's run
    assert asyncio.run(insert_then_prepare()) == [(0, []), (0, [up]), (1, []), (0, [up])]


def test_levels_a_prompt_brings_again_are_kept_as_they_were_and_not_read(caplog):
    """A prompt asked for again brings back levels the cache holds: what is cached is kept, and what came is not
    read at all (its check cost the cache thread 5 to 7 us an image, for latents it would not keep); a level it lacks
    is read, and refused when unusable."""
    service = build_cache_service(CacheConfig(), MODEL, LEVELS, choose=lambda *args: IN_FULL)
    request = SimpleNamespace(spec=Generate(request_id="r", prompt="a cat"), steps=SHAPE.steps, width=64, height=64)
    vector = EMBEDDER.embed(["a cat"])[0]
    unusable = np.full_like(LATENT, np.nan)

    def brought(levels: list[int], latents: list[np.ndarray]) -> Returned:
        done = ItemDone("j", Blob(b"img"), 0, levels, np.stack(latents), 1.0, SHAPE.steps)
        return Returned(done, "w", 0, LATENT.shape)

    async def insert_three_times() -> PromptCache:
        service.insert(request, vector, brought([5], [LATENT]))
        service.insert(request, vector, brought([5], [unusable]))  # held: not read
        await service.stats()  # the thread has taken both in
        assert "not caching" not in caplog.text
        service.insert(request, vector, brought([5, 10], [unusable, unusable]))  # 10 is new: read, and refused
        await service.stats()
        return service._cache

    try:
        cache = asyncio.run(insert_three_times())
        assert "not caching the latents worker w returned" in caplog.text
        assert np.array_equal(cache.read_latent(1, 5), LATENT) and cache.read_latent(1, 10) is None
    finally:
        service.abandon()


def test_a_burst_whose_preparation_fails_on_the_cache_thread_is_answered_with_the_error_and_the_next_prepared():
    """Each request of the burst is handed the error (the engine answers it, engine/server.py _prepared), and the
    thread goes on to the next burst."""
    held = threading.Event()

    def choose(lookup, *args):
        if lookup.prompt == "held":
            held.wait(30)  # the thread is busy: the requests asked for meanwhile make one burst
        if lookup.prompt == "a bug":
            raise RuntimeError("a bug")
        return IN_FULL

    service = build_cache_service(CacheConfig(), MODEL, LEVELS, choose=choose)

    async def prepared(prompts: list[str], then=lambda: None) -> list[object]:
        loop = asyncio.get_running_loop()
        answers = [loop.create_future() for _ in prompts]
        for prompt, answer in zip(prompts, answers, strict=True):
            spec = Generate(request_id=prompt, prompt=prompt)
            request = SimpleNamespace(spec=spec, steps=SHAPE.steps, width=64, height=64, seeds=[0])
            service.prepare(request, lambda _, preparation, answer=answer: answer.set_result(preparation))
        then()
        return await asyncio.wait_for(asyncio.gather(*answers), 30)

    async def three_bursts() -> tuple[list[object], list[object]]:
        return await prepared(["held", "a bug", "a cat", "a dog"], then=held.set), await prepared(["a cow"])

    try:
        (first, *failed), after = asyncio.run(three_bursts())
    finally:
        service.abandon()
    assert first.level == 0 and after[0].level == 0
    assert len(failed) == 3 and all(isinstance(answer, RuntimeError) for answer in failed)


def test_a_prompt_the_cache_holds_is_prepared_without_being_embedded_again():
    """Its own neighbour, at similarity 1 (PromptCache.find_many): before, each request embedded and searched for it."""
    asked: list[list[str]] = []

    class Counted(HashEmbedder):
        def embed(self, prompts: list[str]) -> np.ndarray:
            asked.append(prompts)
            return super().embed(prompts)

    embedder = Counted()
    cache = PromptCache("hash", embedder.dim, LEVELS, max_bytes=1 << 30, model=MODEL)
    cache.insert("a cat", EMBEDDER.embed(["a cat"])[0], SHAPE, {5: LATENT})
    service = CacheService(cache, embedder, choose=lambda *args: IN_FULL)

    async def prepared(prompt: str):
        done = asyncio.get_running_loop().create_future()
        request = SimpleNamespace(spec=Generate(request_id=prompt, prompt=prompt), steps=50, width=64, height=64)
        service.prepare(request, lambda _, preparation: done.set_result(preparation))
        return await asyncio.wait_for(done, 30)

    async def prepare_two() -> list:
        return [await prepared("a cat"), await prepared("a dog")]

    try:
        held, new = asyncio.run(prepare_two())
    finally:
        service.abandon()
    assert asked == [["a dog"]]
    assert (
        held.similarity == 1.0 and held.neighbour == "a cat" and np.allclose(held.vector, EMBEDDER.embed(["a cat"])[0])
    )
    assert new.neighbour == "a cat" and new.similarity < 1
