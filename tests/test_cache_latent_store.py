"""The latent store: byte budgets in memory and on disk, spilling down a tier, compact storage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.cache.latent_store import LatentStore

LATENT = np.arange(4 * 16 * 16, dtype=np.float16).reshape(4, 16, 16)  # 2 KiB


def fail_the_spill_folder(tmp_path) -> Path:
    """Puts a file in the place of the store's spill folder: writes, reads and deletes in it all fail, as on a full
    disk or a filesystem remounted read-only."""
    [folder] = tmp_path.iterdir()
    shutil.rmtree(folder)
    folder.write_bytes(b"")
    return folder


def assert_only_left(store: LatentStore, key: tuple[int, int], latent: np.ndarray) -> None:
    """The books after the failed spills: `key` alone is stored, in memory, ranked in its tier and served."""
    assert (store.bytes_in_memory, store.bytes_on_disk, len(store)) == (LATENT.nbytes, 0, 1)
    assert [stored for stored, _, _ in store.stored()] == [key]  # every entry is ranked in a tier
    np.testing.assert_array_equal(store.take(key), latent)


def test_memory_overflow_spills_to_disk_then_evicts(tmp_path):
    evicted = []
    store = LatentStore(2 * LATENT.nbytes, str(tmp_path), 2 * LATENT.nbytes, on_evict=evicted.append)
    for prompt_id in range(1, 6):
        store.put((prompt_id, 5), LATENT * prompt_id)
    assert (store.bytes_in_memory, store.bytes_on_disk) == (2 * LATENT.nbytes, 2 * LATENT.nbytes)
    assert evicted == [(1, 5)]  # memory keeps 4 and 5; 2 and 3 are on disk
    [folder] = tmp_path.iterdir()
    # named prompt_level_seq: the third number counts the latents stored
    assert sorted(f.name for f in folder.iterdir()) == ["2_5_1.latent", "3_5_2.latent"]
    assert all(f.stat().st_size == LATENT.nbytes for f in folder.iterdir())
    assert store.peek((2, 5)) is None and store.peek((1, 5)) is None  # a peek reads memory only
    np.testing.assert_array_equal(store.peek((4, 5)), LATENT * 4)
    spilled = store.take((2, 5))  # served from disk, dtype and shape intact
    assert spilled.dtype == np.float16 and spilled.shape == (4, 16, 16)
    np.testing.assert_array_equal(spilled, LATENT * 2)
    store.put((6, 5), LATENT)  # 4 spills; on disk 3 (score 0) goes, 2 (a hit) stays
    assert evicted == [(1, 5), (3, 5)]
    assert (2, 5) in store and (3, 5) not in store
    store.close()
    assert not folder.exists()


def test_without_a_spill_directory_evictions_are_final():
    evicted = []
    store = LatentStore(LATENT.nbytes, on_evict=evicted.append)
    store.put((1, 5), LATENT)
    store.put((2, 5), LATENT)
    assert evicted == [(1, 5)] and store.bytes_in_memory == LATENT.nbytes and store.spills == 0


def test_a_latent_larger_than_memory_goes_straight_to_disk(tmp_path):
    store = LatentStore(LATENT.nbytes - 1, str(tmp_path), LATENT.nbytes)
    store.put((1, 5), LATENT)
    assert (store.bytes_in_memory, store.bytes_on_disk) == (0, LATENT.nbytes)
    np.testing.assert_array_equal(store.take((1, 5)), LATENT)
    store.close()


def test_a_newcomer_ranked_below_everything_goes_down_instead(tmp_path):
    evicted = []
    store = LatentStore(LATENT.nbytes, str(tmp_path), LATENT.nbytes, on_evict=evicted.append)
    store.put((1, 25), LATENT)
    store.take((1, 25))  # score 25: outranks any fresh latent
    store.put((2, 5), LATENT)  # to disk, not displacing (1, 25)
    store.take((2, 5))
    store.put((3, 5), LATENT)  # below both: dropped at once
    assert evicted == [(3, 5)]
    assert (1, 25) in store and (2, 5) in store
    store.close()


@pytest.mark.parametrize("tier", ["memory", "disk"])
def test_a_newcomer_that_cannot_fit_displaces_nobody(tmp_path, tier):
    """Before, the lowest-ranked entry was pushed out first, and then the newcomer went down a tier anyway."""
    evicted = []
    budgets = dict(max_bytes=300) if tier == "memory" else dict(max_bytes=0, spill_dir=str(tmp_path), spill_bytes=300)
    store = LatentStore(**budgets, on_evict=evicted.append)  # the tier below is none, or nothing
    store.put((1, 5), np.zeros(50, np.float16))  # 100 bytes, score 0: the lowest ranked
    store.put((2, 25), np.zeros(100, np.float16))  # 200 bytes
    store.take((2, 25))  # score 25: outranks the newcomer
    store.put((3, 5), np.zeros(100, np.float16))  # 200 bytes, score 0: fits only if (2, 25) goes
    assert evicted == [(3, 5)]
    assert (1, 5) in store and (2, 25) in store
    store.close()


def test_a_latent_larger_than_every_budget_is_said_once(tmp_path, caplog):
    """--cache-bytes 1000 for SD-XL's 128 KiB latents cached nothing, and every image was a miss without a word."""
    store = LatentStore(300, str(tmp_path), 200)
    with caplog.at_level("WARNING", logger="argus.cache"):
        store.put((1, 5), np.zeros(200, np.float16))  # 400 bytes
        store.put((2, 5), np.zeros(200, np.float16))
        store.put((3, 5), np.zeros(100, np.float16))  # 200: fits
    assert len(store) == 1 and (3, 5) in store
    [message] = [record.getMessage() for record in caplog.records]
    assert message.startswith(
        "a latent of 400 bytes is larger than the cache's memory budget (300 bytes, --cache-bytes) and its disk"
        " budget (200, --cache-dir-bytes): not cached"
    )
    store.close()


def test_a_latent_larger_than_memory_without_a_spill_budget_is_said_too_large_naming_no_disk_budget(tmp_path, caplog):
    """Spilling off (no --cache-dir-bytes, or a --cache-dir that cannot be written, whatever it was) was said as
    "its disk budget (0, --cache-dir-bytes)": for a read-only folder, a figure the operator never gave."""
    store = LatentStore(300, str(tmp_path), 0)
    with caplog.at_level("WARNING", logger="argus.cache"):
        store.put((1, 5), np.zeros(200, np.float16))  # 400 bytes
    [message] = [record.getMessage() for record in caplog.records]
    assert message.startswith(
        "a latent of 400 bytes is larger than the cache's memory budget (300 bytes, --cache-bytes) and it spills none:"
        " not cached"
    )
    store.close()


@pytest.mark.parametrize(
    "contents",
    [b"short", LATENT.tobytes() + b"more", np.full_like(LATENT, np.nan).tobytes()],
    ids=["cut short", "grown", "NaN of the right size"],  # NaN would reach a worker and spoil its image
)
def test_an_unreadable_spill_file_is_a_miss_and_an_eviction(tmp_path, contents):
    evicted = []
    store = LatentStore(0, str(tmp_path), LATENT.nbytes, on_evict=evicted.append)
    store.put((1, 5), LATENT)
    [file] = next(tmp_path.iterdir()).iterdir()
    file.write_bytes(contents)
    assert store.take((1, 5)) is None
    assert evicted == [(1, 5)] and store.bytes_on_disk == 0
    store.close()


def test_spill_files_that_cannot_be_read_back_are_logged_once_until_a_read_works_again(tmp_path, caplog):
    """A spill folder deleted under the engine (a tmp cleaner), or a disk going bad, lost each latent at its hit with
    nothing in the log: the cache shrank, and only the evictions counter said so."""
    store = LatentStore(0, str(tmp_path), 100 * LATENT.nbytes)
    for i in range(5):
        store.put((i, 5), LATENT)
    for file in next(tmp_path.iterdir()).iterdir():
        file.unlink()
    with caplog.at_level("INFO", logger="argus.cache"):
        assert all(store.take((i, 5)) is None for i in range(4))
        store.put((5, 5), LATENT)
        np.testing.assert_array_equal(store.take((5, 5)), LATENT)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert "could not read latent (0, 5) back from disk" in messages[0] and "not logged" in messages[0]
    assert messages[1] == "reading from disk works again: 4 latents could not be read back"
    store.close()


def test_a_spill_directory_that_does_not_exist_yet_is_made(tmp_path):
    store = LatentStore(0, str(tmp_path / "cache" / "spill"), LATENT.nbytes)
    store.put((1, 5), LATENT)
    np.testing.assert_array_equal(store.take((1, 5)), LATENT)
    store.close()


def test_a_spill_that_cannot_be_written_is_an_eviction_and_the_books_stay_right(tmp_path):
    evicted = []
    store = LatentStore(LATENT.nbytes, str(tmp_path), 4 * LATENT.nbytes, on_evict=evicted.append)
    store.put((1, 5), LATENT)
    fail_the_spill_folder(tmp_path)
    store.put((2, 5), LATENT)  # (1, 5) cannot go down a tier: it is lost, not half-kept
    store.put((3, 5), LATENT * 3)
    assert evicted == [(1, 5), (2, 5)]
    assert_only_left(store, (3, 5), LATENT * 3)
    store.close()


def test_a_spill_folder_deleted_while_running_is_made_again(tmp_path):
    """A tmp cleaner, or a hand tidying up argus-spill-* folders. Before, every later spill failed (the first
    logged), and the disk tier stayed empty until a restart."""
    evicted = []
    store = LatentStore(LATENT.nbytes, str(tmp_path), 4 * LATENT.nbytes, on_evict=evicted.append)
    store.put((1, 5), LATENT)
    store.put((2, 5), LATENT * 2)  # (1, 5) goes to disk
    [folder] = tmp_path.iterdir()
    shutil.rmtree(tmp_path)
    for prompt_id in range(3, 6):
        store.put((prompt_id, 5), LATENT * prompt_id)
    assert evicted == []
    assert sorted(f.name for f in folder.iterdir()) == ["2_5_1.latent", "3_5_2.latent", "4_5_3.latent"]
    assert folder.stat().st_mode & 0o777 == 0o700
    np.testing.assert_array_equal(store.take((3, 5)), LATENT * 3)
    assert store.take((1, 5)) is None and evicted == [(1, 5)]  # deleted with the folder
    store.close()
    assert not folder.exists()


def test_bookkeeping_is_small_next_to_the_latents():
    import tracemalloc

    sdxl = np.zeros((4, 128, 128), dtype=np.float16)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = LatentStore(1 << 30)
        for prompt_id in range(200):
            store.put((prompt_id, 5), sdxl)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store.bytes_in_memory == 200 * sdxl.nbytes
    assert held / 200 <= 1.01 * sdxl.nbytes


def test_rejects_a_duplicate_key_an_unsupported_dtype_and_values_not_finite():
    store = LatentStore(1 << 20)
    store.put((1, 5), LATENT)
    with pytest.raises(KeyError):
        store.put((1, 5), LATENT * 2)
    with pytest.raises(TypeError):
        store.put((2, 5), LATENT.astype(np.int16))
    with pytest.raises(ValueError):
        store.put((3, 5), np.full_like(LATENT, np.inf))  # an overflowed fp16 run: it would spoil every image after
    assert (len(store), store.bytes_in_memory) == (1, LATENT.nbytes)
    np.testing.assert_array_equal(store.take((1, 5)), LATENT)  # the first, as it was


def test_a_stored_latent_is_a_read_only_copy():
    """A worker's message buffer may be reused, and a caller that changed what it was handed changed the cache."""
    store = LatentStore(1 << 20)
    given = LATENT.copy()
    store.put((1, 5), given)
    given[0, 0, 0] = 99
    held = store.take((1, 5))
    np.testing.assert_array_equal(held, LATENT)
    with pytest.raises(ValueError, match="read-only"):
        held[0, 0, 0] = 99


def test_an_entry_pushed_down_to_a_full_disk_goes_before_a_newer_one_of_equal_score(tmp_path):
    """Among equal scores the oldest goes first, in a tier and between them: the one pushed down from memory is
    older than the one already on disk, so it is the one evicted."""
    evicted = []
    store = LatentStore(LATENT.nbytes, str(tmp_path), LATENT.nbytes, on_evict=evicted.append)
    store.put((1, 5), LATENT)
    store.take((1, 5))  # score 5, in memory
    store.put((2, 5), LATENT)  # below (1, 5): straight to disk
    store.take((2, 5))  # score 5 too, newer
    store.restore((3, 25), LATENT, uses=1, on_disk=False)  # score 25: pushes (1, 5) down, which displaces nobody
    assert evicted == [(1, 5)]
    assert (2, 5) in store and store.peek((3, 25)) is not None
    store.close()


def test_a_spill_directory_that_keeps_failing_is_logged_once_until_it_works_again(tmp_path, caplog):
    """Before, every latent that could not go to disk logged a warning: five a request while a disk stayed full."""
    store = LatentStore(0, str(tmp_path), 100 * LATENT.nbytes)
    folder = fail_the_spill_folder(tmp_path)
    with caplog.at_level("INFO", logger="argus.cache"):
        for i in range(20):
            store.put((i, 5), LATENT)
        folder.unlink()
        folder.mkdir()
        store.put((20, 5), LATENT)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert "could not spill latent (0, 5)" in messages[0] and "further failures are not logged" in messages[0]
    assert "spilling to disk works again: 20 latents could not be spilled" in messages[1]
    store.close()


def test_a_spill_folder_where_files_cannot_even_be_deleted_keeps_the_books_right(tmp_path):
    """A filesystem remounted read-only (ext4 on errors) fails the deletes too, as a file in the folder's place does.
    Before, the failed delete escaped: the latent stayed stored in no tier, and the next hit on it (a KeyError) or
    save at the drain (the same) failed."""
    evicted = []
    store = LatentStore(LATENT.nbytes, str(tmp_path), 4 * LATENT.nbytes, on_evict=evicted.append)
    store.put((1, 5), LATENT)
    store.put((2, 5), LATENT * 2)  # (1, 5) goes to disk
    fail_the_spill_folder(tmp_path)
    store.put((3, 5), LATENT * 3)  # (2, 5) cannot go down to disk: lost
    assert store.take((1, 5)) is None  # unreadable: lost
    assert evicted == [(2, 5), (1, 5)]
    assert_only_left(store, (3, 5), LATENT * 3)
    store.close()


def spill_files(tmp_path) -> list[str]:
    return sorted(f.name for f in next(tmp_path.iterdir()).iterdir())


def test_a_spill_file_a_snapshot_names_is_kept_until_the_last_snapshot_is_written(tmp_path):
    """Two snapshots may be written at once (a checkpoint and a drain's save): the first done must not delete a file
    the other still reads."""
    store = LatentStore(0, str(tmp_path), LATENT.nbytes)
    store.put((1, 5), LATENT)
    store.pin()
    store.pin()
    store.put((2, 5), LATENT)  # takes the disk: (1, 5) is evicted, its file kept for the snapshots
    assert (1, 5) not in store and spill_files(tmp_path) == ["1_5_0.latent", "2_5_1.latent"]
    store.unpin()
    assert spill_files(tmp_path) == ["1_5_0.latent", "2_5_1.latent"]
    store.unpin()
    assert spill_files(tmp_path) == ["2_5_1.latent"]
    store.close()


def test_a_latent_a_snapshot_found_lost_is_evicted_only_if_still_stored_as_it_was(tmp_path):
    """Stored again under the same key meanwhile, it is another latent, in a file of its own: it stays."""
    store = LatentStore(0, str(tmp_path), 2 * LATENT.nbytes)
    store.put((1, 5), LATENT)
    store.put((2, 5), LATENT)
    snapshot = store.pin()
    lost = [(key, snapshot.entries[key].seq) for key in [(1, 5), (2, 5)]]  # the writer could read neither file
    (next(tmp_path.iterdir()) / "1_5_0.latent").write_bytes(b"short")
    assert store.take((1, 5)) is None  # nor could a hit meanwhile: evicted
    store.put((1, 5), LATENT * 2)  # and stored again
    store.unpin(lost)
    assert (1, 5) in store and (2, 5) not in store
    np.testing.assert_array_equal(store.take((1, 5)), LATENT * 2)
    store.close()


def test_a_restored_latent_keeps_the_hits_it_was_saved_with():
    """They rank it: restored as fresh, a latent that served many images went before a newcomer never used."""
    evicted = []
    store = LatentStore(LATENT.nbytes, on_evict=evicted.append)
    store.restore((1, 5), LATENT, uses=1, on_disk=False)
    store.put((2, 5), LATENT)
    assert evicted == [(2, 5)] and [record.uses for _, record, _ in store.stored()] == [1]


def test_a_snapshot_counts_a_spill_file_whole_only_at_its_size(tmp_path):
    """One that grew since (another process writing there) is no more the latent than one cut short: left out of a
    save up front, not found unreadable as it is written, each such file costing the save a write of its own."""
    store = LatentStore(0, str(tmp_path), 3 * LATENT.nbytes)
    for prompt_id in range(3):
        store.put((prompt_id, 5), LATENT)
    folder = next(tmp_path.iterdir())
    (folder / "1_5_1.latent").write_bytes(LATENT.tobytes() + b"more")
    (folder / "2_5_2.latent").write_bytes(b"short")
    snapshot = store.pin()
    assert [snapshot.intact(key, entry) for key, entry in snapshot.entries.items()] == [True, False, False]
    store.unpin()
    store.close()
