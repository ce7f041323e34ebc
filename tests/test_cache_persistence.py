"""Warm restart: save() then load() gives the same cache; a bad file is refused whole, with CacheFileError."""

from __future__ import annotations

import gc
import os
import struct

import msgspec
import numpy as np
import pytest
from cache_room import room

from engine.cache import gil_slices, persistence
from engine.cache.cache_dir import load_saved_cache
from engine.cache.embedders import HashEmbedder
from engine.cache.persistence import FILE_NAME, CacheFileError
from engine.cache.prompt_cache import PromptCache, ShapeKey
from engine.config import CacheConfig

DIM = 16
LEVELS = (5, 10, 15, 20, 25)
SQUARE, WIDE = ShapeKey(50, 64, 64), ShapeKey(30, 96, 64)


def vector(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(DIM).astype(np.float32)


def latent(i: int, level: int, dtype=np.float16) -> np.ndarray:
    return np.random.default_rng(1000 * i + level).standard_normal((4, 8, 8)).astype(dtype)


@pytest.fixture
def saved(tmp_path):
    """A cache with prompts in two shapes, one latent spilled to disk and some hits, saved to tmp_path/saved."""
    texts = ["prompt 0", "prompt 1", "prompt 2", "prompt 3", "prompt 9"]
    memory = room(9 * 512, texts, DIM, LEVELS)
    cache = PromptCache("hash", DIM, LEVELS, max_bytes=memory, spill_dir=str(tmp_path), spill_bytes=4096)
    for i in range(4):
        cache.insert(f"prompt {i}", vector(i), SQUARE, {5: latent(i, 5), 25: latent(i, 25)})
    cache.insert("prompt 9", vector(9), WIDE, {10: latent(9, 10, np.float32)})
    cache.take_latent(1, 25)
    cache.take_latent(1, 25)
    assert cache.stats().bytes_on_disk > 0
    cache.save(str(tmp_path / "saved"))
    yield cache, tmp_path / "saved"
    cache.close()


def load(directory, **changes) -> PromptCache:
    args = dict(embedder_name="hash", dim=DIM, levels=LEVELS, max_bytes=1 << 20) | changes
    return PromptCache.load(str(directory), **args)


def test_round_trip(saved):
    original, directory = saved
    restored = load(directory)
    try:
        assert restored.stats().entries == original.stats().entries
        assert restored.stats().prompts == original.stats().prompts
        for i, shape in [(0, SQUARE), (1, SQUARE), (3, SQUARE), (9, WIDE)]:
            before, after = original.lookup(vector(i), shape), restored.lookup(vector(i), shape)
            assert (after.prompt_id, after.prompt, after.levels) == (before.prompt_id, before.prompt, before.levels)
            assert after.similarity == pytest.approx(1.0, abs=1e-5)
            for level in after.levels:
                a, b = original.take_latent(after.prompt_id, level), restored.take_latent(after.prompt_id, level)
                assert a.dtype == b.dtype and a.shape == b.shape
                np.testing.assert_array_equal(a, b)
        assert restored.insert("new", vector(20), SQUARE, {5: latent(20, 5)}) > 5  # ids are not reused
    finally:
        restored.close()


def test_a_restart_with_the_same_budgets_keeps_every_latent_in_its_tier(tmp_path):
    """Latents of two sizes: placed anew by LCBFU, a small one pushed a large one off a full disk."""
    memory = room(1024, [f"p{i}" for i in range(5)], DIM, LEVELS)
    budgets = dict(max_bytes=memory, spill_dir=str(tmp_path), spill_bytes=1024)
    big, small = ShapeKey(50, 64, 64), ShapeKey(50, 32, 32)
    cache = PromptCache("hash", DIM, LEVELS, **budgets)
    for i, (shape, elements) in enumerate([(big, 128), (big, 128), (small, 64), (big, 128), (small, 64)]):
        cache.insert(f"p{i}", vector(i), shape, {25: np.full(elements, i, np.float32)})
    cache.take_latent(cache.lookup(vector(1), big).prompt_id, 25)
    before = cache.stats()
    assert before.bytes_on_disk > 0 and before.evictions == 0
    cache.save(str(tmp_path / "saved"))
    restored = load(tmp_path / "saved", **budgets)
    try:
        after = restored.stats()
        assert (after.entries, after.bytes_in_memory, after.bytes_on_disk) == (
            before.entries,
            before.bytes_in_memory,
            before.bytes_on_disk,
        )
        assert after.evictions == 0
    finally:
        restored.close()
        cache.close()


def test_the_seed_of_each_latents_run_survives_a_restart(tmp_path):
    """A request's image of that seed resumes from it (engine/dispatch/jobs.py image_of): not saved, every latent
    started its request's first image after a restart, the image of that seed beside it the same picture run in full."""
    cache = PromptCache("hash", DIM, LEVELS, max_bytes=1 << 20)
    first = cache.insert("a fox", vector(0), SQUARE, {5: latent(0, 5)}, seed=3)
    cache.insert("a fox", vector(0), SQUARE, {10: latent(0, 10)}, seed=7)  # a level it lacked, from another run
    second = cache.insert("a cat", vector(1), SQUARE, {5: latent(1, 5)})  # of no known seed
    cache.save(str(tmp_path))
    cache.close()
    restored = load(tmp_path)
    try:
        seeds = [restored.latent_seed(first, 5), restored.latent_seed(first, 10), restored.latent_seed(second, 5)]
        assert seeds == [3, 7, None]
    finally:
        restored.close()


def test_the_seeds_of_what_was_cached_while_the_file_was_read_survive_the_hand_over():
    """absorb(): the prompts cached while the saved cache was read keep the seed of each latent's run."""
    restored = PromptCache("hash", DIM, LEVELS, max_bytes=1 << 20)
    newer = PromptCache("hash", DIM, LEVELS, max_bytes=1 << 20)
    try:
        restored.insert("a fox", vector(0), SQUARE, {5: latent(0, 5)}, seed=3)
        newer.insert("a fox", vector(0), SQUARE, {5: latent(0, 5), 10: latent(0, 10)}, seed=8)  # gains level 10
        newer.insert("a cat", vector(1), SQUARE, {5: latent(1, 5), 25: latent(1, 25)}, seed=4)
        newer.insert("a cat", vector(1), SQUARE, {10: latent(1, 10)})  # of no known seed
        restored.absorb(newer)
        fox, cat = (restored.lookup(vector(i), SQUARE).prompt_id for i in (0, 1))
        keys = [(fox, 5), (fox, 10), (cat, 5), (cat, 10), (cat, 25)]
        assert [restored.latent_seed(*key) for key in keys] == [3, 8, 4, None, 4]
    finally:
        newer.close()
        restored.close()


def test_hits_survive_a_restart_into_a_smaller_cache(saved):
    _, directory = saved
    restored = load(directory, max_bytes=room(512, ["prompt 1"], DIM, LEVELS))  # room for one: the most used
    try:
        assert restored.stats().entries == 1
        assert restored.lookup(vector(1), SQUARE).levels == (25,)
    finally:
        restored.close()


def test_the_uses_a_latent_was_saved_with_rank_it_after_a_restart(tmp_path):
    """Five hits on a latent of level 5 outrank the unused one of level 25 (LCBFU scores level x uses): restored into
    room for one, it is the one kept, though it is the older."""
    cache = PromptCache("hash", DIM, LEVELS, max_bytes=1 << 20)
    used = cache.insert("used", vector(0), SQUARE, {5: latent(0, 5)})
    cache.insert("unused", vector(1), SQUARE, {25: latent(1, 25)})
    for _ in range(5):
        cache.take_latent(used, 5)
    cache.save(str(tmp_path))
    cache.close()
    restored = load(tmp_path, max_bytes=room(512, ["unused"], DIM, LEVELS))
    try:
        assert restored.stats().prompts == 1 and restored.lookup(vector(0), SQUARE).prompt == "used"
    finally:
        restored.close()


def test_a_save_sets_off_no_full_pass_of_the_garbage_collector(tmp_path):
    """A save of N prompts leaves no new object per entry alive while it is written: those set off full passes over
    everything the cache holds, pausing the event loop (tens of ms at 20,000 prompts). As in the engine, what was
    there before the cache is frozen; low thresholds make the 5,000 prompts count as many would."""
    full_passes = []

    def count(phase, info):
        if phase == "start" and info["generation"] == 2:
            full_passes.append(info)

    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    cache = PromptCache("hash", DIM, LEVELS, max_bytes=1 << 30)
    try:
        for i in range(5000):
            cache.insert(f"prompt {i}", vector(i), SQUARE, {5: latent(0, 5)})
        gc.collect()  # the cache's objects, long-lived
        gc.set_threshold(100, 10, 10)
        gc.callbacks.append(count)
        cache.save(str(tmp_path))
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        cache.close()
    assert full_passes == []
    assert len(persistence.read_cache_file(tmp_path / FILE_NAME, "hash", DIM, LEVELS, "").prompts) == 5000


@pytest.mark.parametrize("count", [0, 15, 16, 70_000])  # msgpack's three array headers; whole and part slices
def test_the_header_is_encoded_in_slices_byte_for_byte_as_msgspec_encodes_it_whole(tmp_path, monkeypatch, count):
    """A file loads in builds before and after the header was encoded in slices, and no encoding takes more than a
    slice of records: 200,000 in one call held the GIL from the event loop for 20 to 35 ms."""
    monkeypatch.setattr(gil_slices, "SLICE", 1000)
    encoder, encoded = persistence._ENCODER, []

    class Counting:
        def encode(self, obj):
            encoded.append(obj)
            return encoder.encode(obj)

    monkeypatch.setattr(persistence, "_ENCODER", Counting())
    prompts = [persistence.SavedPrompt(i + 1, f"prompt {i}", 50, 64, 64) for i in range(count)]
    latents = [persistence.SavedLatent(i + 1, 5, i, "float16", (4,), 0, 8, i % 2 == 0) for i in range(count)]
    arrays = (np.full(4, i % 100, np.float16) for i in range(count))
    path = tmp_path / FILE_NAME
    persistence.write_cache_file(
        path, "hash", DIM, LEVELS, count + 1, iter(prompts), np.ones((count, DIM)), iter(latents), arrays, "m"
    )
    whole = msgspec.msgpack.encode(persistence._Meta("hash", DIM, list(LEVELS), count + 1, prompts, latents, "m"))
    data = path.read_bytes()
    *_, length, _ = persistence._PREAMBLE.unpack_from(data)
    assert data[persistence._PREAMBLE.size :][:length] == whole
    assert max((len(obj) for obj in encoded if isinstance(obj, list)), default=0) <= 1000
    assert persistence.read_cache_file(path, "hash", DIM, LEVELS, "m").prompts == prompts


@pytest.mark.parametrize("length", [15, 16, 65_535, 65_536])
def test_an_array_header_is_msgspecs_at_each_edge_of_its_three_forms(length):
    assert persistence._array_header(length) + bytes(length) == msgspec.msgpack.encode([0] * length)


def test_saving_again_replaces_the_file_atomically(saved):
    cache, directory = saved
    cache.insert("prompt 10", vector(10), SQUARE, {5: latent(10, 5)})
    cache.save(str(directory))
    assert [p.name for p in directory.iterdir()] == [FILE_NAME]
    restored = load(directory)
    assert restored.lookup(vector(10), SQUARE).prompt == "prompt 10"
    restored.close()


def test_a_save_leaves_out_latents_whose_spill_files_are_gone_or_cut_short(tmp_path):
    """Before, one unreadable spill file failed the whole save: a restart lost everything since the last one."""
    memory = room(512, [f"prompt {i}" for i in range(4)], DIM, LEVELS)  # the 4 prompts and 1 latent: 3 spilled
    cache = PromptCache("hash", DIM, LEVELS, max_bytes=memory, spill_dir=str(tmp_path / "spill"), spill_bytes=4096)
    ids = [cache.insert(f"prompt {i}", vector(i), SQUARE, {5: latent(i, 5)}) for i in range(4)]
    [folder] = (tmp_path / "spill").iterdir()
    [gone] = folder.glob(f"{ids[0]}_5_*.latent")
    [cut_short] = folder.glob(f"{ids[1]}_5_*.latent")
    gone.unlink()
    cut_short.write_bytes(b"short")
    cache.save(str(tmp_path / "saved"))
    assert cache.stats().prompts == 2  # evicted, as a hit reading them would
    restored = load(tmp_path / "saved")
    try:
        assert restored.stats().prompts == 2
        for i in (2, 3):
            neighbour = restored.lookup(vector(i), SQUARE)
            assert neighbour.prompt == f"prompt {i}"
            np.testing.assert_array_equal(restored.take_latent(neighbour.prompt_id, 5), latent(i, 5))
    finally:
        restored.close()
        cache.close()


def damage_byte(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_spill_files_lost_together_are_one_warning_at_the_save(tmp_path, caplog):
    """A spill folder deleted under a large cache: before, the save logged a line per latent, hundreds of thousands."""
    memory = room(0, [f"prompt {i}" for i in range(30)], DIM, LEVELS)  # their prompts, no latent
    cache = PromptCache("hash", DIM, LEVELS, max_bytes=memory, spill_dir=str(tmp_path / "spill"), spill_bytes=1 << 20)
    for i in range(30):
        cache.insert(f"prompt {i}", vector(i), SQUARE, {5: latent(i, 5), 25: latent(i, 25)})
    [folder] = (tmp_path / "spill").iterdir()
    for spilled in folder.iterdir():
        spilled.unlink()
    with caplog.at_level("INFO", logger="argus.cache"):
        cache.save(str(tmp_path / "saved"))
    assert [record.getMessage() for record in caplog.records] == [
        "60 spill files were missing, cut short or unreadable (latent (1, 5) the first): evicted"
    ]
    assert cache.stats().prompts == 0
    cache.close()


@pytest.mark.parametrize("where", ["header", "meta", "vectors", "latents", "digest"])
def test_a_corrupt_byte_is_refused(saved, where):
    _, directory = saved
    path = directory / FILE_NAME
    size = path.stat().st_size
    meta_length = struct.unpack_from("<Q", path.read_bytes(), 12)[0]
    offsets = {"header": 3, "meta": 60, "vectors": 52 + meta_length + 5, "latents": size - 100, "digest": size - 1}
    damage_byte(path, offsets[where])
    with pytest.raises(CacheFileError, match="not a prompt cache|corrupt|checksum"):
        load(directory)


@pytest.mark.parametrize("keep", [0, 10, 60, -33, -1])
def test_a_truncated_file_is_refused(saved, keep):
    _, directory = saved
    path = directory / FILE_NAME
    data = path.read_bytes()
    path.write_bytes(data[: keep % len(data)])
    with pytest.raises(CacheFileError, match="short|truncated"):
        load(directory)


@pytest.mark.parametrize("changes", [dict(embedder_name="minilm"), dict(dim=DIM + 1), dict(model="tiny")])
def test_a_foreign_file_is_refused(saved, changes):
    """Other levels are not foreign: see test_cache_level_change.py."""
    _, directory = saved
    with pytest.raises(CacheFileError, match="was saved for embedder 'hash', dim 16"):
        load(directory, **changes)


def test_another_format_version_is_refused(saved):
    _, directory = saved
    path = directory / FILE_NAME
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, persistence.FORMAT_VERSION + 1)
    path.write_bytes(bytes(data))
    with pytest.raises(CacheFileError, match="format version 2, a newer build's: this build reads version 1 alone"):
        load(directory)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(CacheFileError, match="no saved cache"):
        load(tmp_path)


def test_a_refused_file_builds_nothing(saved, tmp_path, monkeypatch):
    _, directory = saved
    damage_byte(directory / FILE_NAME, (directory / FILE_NAME).stat().st_size - 100)
    built = []
    monkeypatch.setattr(PromptCache, "_restore", lambda self, saved: built.append(saved))
    spill = tmp_path / "spill"
    spill.mkdir()
    with pytest.raises(CacheFileError):
        load(directory, spill_dir=str(spill), spill_bytes=1 << 20)
    assert built == [] and list(spill.iterdir()) == []


@pytest.mark.parametrize("error", [ValueError, OSError])
def test_a_restore_that_fails_halfway_is_a_cache_file_error_and_leaves_no_spill_folder(saved, tmp_path, error):
    """Past the file's checks, what takes the model's latent shape (from its folder) fails: the load raises what a
    refused file does, and the cache it had begun is closed, its private spill folder with it."""

    def latent_shape(shape):
        raise error("the model's latent shape")

    _, directory = saved
    spill = tmp_path / "spill-restored"
    with pytest.raises(CacheFileError, match="cannot be restored: the model's latent shape"):
        load(directory, spill_dir=str(spill), spill_bytes=1 << 20, latent_shape=latent_shape)
    assert list(spill.iterdir()) == []


def test_levels_given_in_any_order_read_the_file_saved_with_them(saved):
    _, directory = saved
    restored = load(directory, levels=(25, 5, 20, 10, 15, 5))
    try:
        assert restored.stats().entries == 9
    finally:
        restored.close()


def test_an_intact_but_inconsistent_file_is_refused(tmp_path):
    """A file whose checksums hold but whose contents contradict themselves (a buggy writer)."""
    prompts = [persistence.SavedPrompt(1, "p", 50, 64, 64)]
    bad_level = [persistence.SavedLatent(1, 7, 0, "float16", [4, 8, 8], 0, 512)]
    persistence.write_cache_file(
        tmp_path / FILE_NAME,
        "hash",
        DIM,
        LEVELS,
        2,
        prompts,
        vector(0)[None],
        bad_level,
        [latent(0, 5)],
        "",
    )
    with pytest.raises(CacheFileError, match="inconsistent: latent \\(1, 7\\)"):
        load(tmp_path)


@pytest.mark.parametrize(
    "next_prompt_id, prompt_id, shape, data",
    [
        (2, 1, [2**62, 4], np.zeros(0, np.float16)),  # numpy's product of the shape wraps to 0 bytes
        (2, 1, [1] * 70, np.zeros(1, np.float16)),  # more dimensions than numpy allows
        (2**64 - 1, 2**64 - 2, [4], np.zeros(4, np.float16)),  # ids past what the index takes
    ],
    ids=["wrapping-shape", "too-many-dimensions", "huge-ids"],
)
def test_an_intact_file_a_hostile_writer_made_is_refused(tmp_path, next_prompt_id, prompt_id, shape, data):
    """Checksums anyone can recompute; before, these files crashed the load (and the engine's start)."""
    prompts = [persistence.SavedPrompt(prompt_id, "p", 50, 64, 64)]
    latents = [persistence.SavedLatent(prompt_id, 5, 0, "float16", shape, 0, data.nbytes)]
    persistence.write_cache_file(
        tmp_path / FILE_NAME,
        "hash",
        DIM,
        LEVELS,
        next_prompt_id,
        prompts,
        vector(0)[None],
        latents,
        [data],
        "",
    )
    with pytest.raises(CacheFileError):
        load(tmp_path)


@pytest.mark.parametrize("next_prompt_id", [0, -1])
def test_an_empty_file_whose_next_prompt_id_is_below_1_is_refused(tmp_path, next_prompt_id):
    """A cache's ids start at 1. Restored, a file of no prompts gave its next id as it stood: at -1 every insert failed
    (the index takes no negative id), and the cache held nothing for the engine's life; at 0 the first prompt took id
    0, and the engine's next start refused its own save (prompt ids are checked to be 1 or more)."""
    persistence.write_cache_file(
        tmp_path / FILE_NAME, "hash", DIM, LEVELS, next_prompt_id, [], np.zeros((0, DIM), np.float32), [], [], ""
    )
    with pytest.raises(CacheFileError, match="next_prompt_id"):
        load(tmp_path).close()


def test_the_saved_file_is_readable_by_its_owner_alone(saved):
    """It holds users' prompts: saved with the umask's 0644 in a 0755 --cache-dir, every user of the host read them."""
    _, directory = saved
    assert (directory / FILE_NAME).stat().st_mode & 0o777 == 0o600


def test_a_save_over_a_temporary_file_a_crash_left_is_readable_by_its_owner_alone(saved, monkeypatch):
    """A crashed save's file, made under a looser mode (a build before this one, a hand), keeps its mode when opened
    again: a pid reused by the next engine wrote its prompts into it, and renamed it into place, for all to read."""
    cache, directory = saved
    monkeypatch.setattr(os, "getpid", lambda: 4321)
    left = directory / f"{persistence.TEMPORARY_PREFIX}4321"
    left.write_bytes(b"half a save")
    left.chmod(0o644)
    cache.save(str(directory))
    assert (directory / FILE_NAME).stat().st_mode & 0o777 == 0o600


def test_a_spill_file_overwritten_with_nan_is_neither_served_nor_the_end_of_the_saved_cache(tmp_path, caplog):
    """A spill file of the right size holding NaN (a bad sector, a hand) was served as it was, and once saved, the
    next start refused the whole save over it."""
    memory = room(512, [f"prompt {i}" for i in range(4)], DIM, LEVELS)  # the 4 prompts and 1 latent: 3 spilled
    cache = PromptCache("hash", DIM, LEVELS, max_bytes=memory, spill_dir=str(tmp_path / "spill"), spill_bytes=4096)
    ids = [cache.insert(f"prompt {i}", vector(i), SQUARE, {5: latent(i, 5)}) for i in range(4)]
    [folder] = (tmp_path / "spill").iterdir()
    for i in (0, 1):
        [spilled] = folder.glob(f"{ids[i]}_5_*.latent")
        spilled.write_bytes(b"\xff" * spilled.stat().st_size)  # float16 NaN, every value
    assert cache.take_latent(ids[0], 5) is None
    cache.save(str(tmp_path / "saved"))  # the second, not read since, is saved as it is on disk
    with caplog.at_level("WARNING", logger="argus.cache"):
        restored = load(tmp_path / "saved")
    try:
        assert restored.stats().prompts == 2
        assert "1 saved latent no run can start from" in caplog.text and "NaN or infinite values" in caplog.text
        for i in (2, 3):
            np.testing.assert_array_equal(restored.take_latent(ids[i], 5), latent(i, 5))
    finally:
        restored.close()
        cache.close()


def test_a_saved_latent_of_another_shape_than_the_model_takes_is_left_out(tmp_path, caplog):
    """An edited file, or one saved by a build that cached what a worker of another build returned: its latent
    matches its own record (the byte count is checked against it), not the shape the model's workers take at its
    prompt's size. Restored, every similar prompt resumed from it failed at its worker (worker_error)."""
    cache = PromptCache("hash", DIM, LEVELS, max_bytes=1 << 20)
    good = cache.insert("prompt 0", vector(0), SQUARE, {5: latent(0, 5)})
    wrong = latent(1, 5).reshape(4, 16, 4)  # the same bytes as 4 x 8 x 8
    bad = cache.insert("prompt 1", vector(1), SQUARE, {5: wrong, 25: latent(1, 25)})
    cache.save(str(tmp_path))
    cache.close()
    with caplog.at_level("WARNING", logger="argus.cache"):
        restored = PromptCache.load(str(tmp_path), "hash", DIM, LEVELS, 1 << 20, latent_shape=lambda shape: (4, 8, 8))
    try:
        assert restored.changes == 1  # the next save leaves it out: not skipped as the file's equal
        assert restored.take_latent(bad, 5) is None
        np.testing.assert_array_equal(restored.take_latent(bad, 25), latent(1, 25))
        np.testing.assert_array_equal(restored.take_latent(good, 5), latent(0, 5))
        assert restored.lookup(vector(1), SQUARE).levels == (25,)
        [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warning.startswith("1 saved latent no run can start from") and "(4, 16, 4), not the (4, 8, 8)" in warning
    finally:
        restored.close()


def test_a_prompt_of_the_zero_vector_saved_before_it_was_refused_is_left_out_at_the_restore(tmp_path, caplog):
    """Files saved before 0a02a0e may hold prompts of the zero vector (NULs as far as the embedder reads): no lookup
    finds them since, and restored they held their latents' memory for good. Left out, counted in the restore's
    line, and the next save writes the file without them."""
    embedder, model = HashEmbedder(), "tiny:0123456789abcdef"  # its workers take (4, 8, 8) latents at 64x64
    cache = PromptCache("hash", embedder.dim, LEVELS, max_bytes=1 << 20, model=model)
    kept = cache.insert("prompt 0", embedder.embed(["prompt 0"])[0], SQUARE, {5: latent(0, 5)})
    cache.insert("\0" * 80, np.zeros(embedder.dim, np.float32), SQUARE, {5: latent(1, 5), 25: latent(1, 25)})
    cache.save(str(tmp_path))
    cache.close()
    with caplog.at_level("INFO", logger="argus.cache"):
        restored = load_saved_cache(CacheConfig(directory=str(tmp_path)), model, embedder, LEVELS)
    try:
        assert (restored.stats().prompts, restored.stats().entries) == (1, 1)
        assert restored.changes == 1  # not skipped at the next save as the file's equal
        np.testing.assert_array_equal(restored.take_latent(kept, 5), latent(0, 5))
        assert f"restored from {tmp_path / FILE_NAME}: 1 prompt (1 prompt of the zero vector left out" in caplog.text
    finally:
        restored.close()
