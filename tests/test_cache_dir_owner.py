"""A --cache-dir belongs to one engine: a second engine pointed at it, or a directory the engine cannot write, is
refused at start with one line (exit 2), through real engines."""

from __future__ import annotations

import fcntl
import os
import shutil
import time

from cache_room import room
from waiting import wait_for

from engine.cache.embedders import HashEmbedder
from engine.client import ArgusClient
from engine_process import start_engine
from protocols.client_messages import Images

# memory holds the prompt these tests ask for alone (the hash embedder, five levels): its latents go to disk
PROMPT = "a red fox in the snow"
MEMORY = room(0, [PROMPT], HashEmbedder().dim, (5, 10, 15, 20, 25))


def start(tmp_path, cache_dir, *args: str, wait=True):
    return start_engine(
        tmp_path,
        *("--cache-dir", str(cache_dir), "--cache-dir-bytes", "1000000", "--cache-bytes", str(MEMORY), *args),
        *("--policy", "nirvana", "--time-scale", "0"),
        backend="sim",
        workers=1,
        wait=wait,
    )


def assert_a_second_engine_is_refused(tmp_path, cache_dir) -> None:
    second = start(tmp_path, cache_dir, wait=False)
    try:
        assert second.process.wait(60) == 2
    finally:
        second.stop()
    assert f"--cache-dir {cache_dir} is in use by another engine" in second.log_path.read_text()


def test_a_second_engine_on_a_cache_dir_in_use_is_refused_and_the_first_keeps_its_spilled_latents(tmp_path):
    """Before, the second engine deleted the first's spill folder as a dead engine's leftovers (the first lost every
    spilled latent), and whichever stopped last overwrote the other's save."""
    cache_dir = tmp_path / "cache"
    first = start(tmp_path, cache_dir)
    try:
        with ArgusClient(first.client_address, timeout_s=60) as client:
            assert isinstance(client.generate(PROMPT, width=64, height=64), Images)
        [spill] = (cache_dir / "spill").iterdir()
        # the five latents of a full run go to disk, once the cache thread has inserted them
        deadline = time.monotonic() + 30
        while len(spilled := sorted(spill.iterdir())) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(spilled) == 5
        assert_a_second_engine_is_refused(tmp_path, cache_dir)
        assert sorted(spill.iterdir()) == spilled
    finally:
        assert first.stop() == 0
    third = start(tmp_path, cache_dir)  # the first released the directory as it stopped
    assert third.stop() == 0


def deleted(cache_dir, engine) -> bool:
    """Deletes the folder, again if need be: the engine may write a spill file into a subfolder as it goes, which
    left it not empty for rmtree (CI, once). True once it is gone, or the engine says it saw it go (and made it
    again)."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    return not cache_dir.exists() or "was deleted under this engine" in engine.log_path.read_text()


def test_a_cache_dir_deleted_under_an_engine_is_locked_again_and_saved_in_full(tmp_path):
    """Before, the lock stayed on the deleted folder: a second engine on the path was let in, deleted the first's
    spill folder as leftovers, and the two saved over each other; and the first, its cache unchanged, never wrote
    the save that went with the folder again."""
    cache_dir = tmp_path / "cache"
    first = start(tmp_path, cache_dir, "--cache-save-interval", "0.05")
    try:
        with ArgusClient(first.client_address, timeout_s=60) as client:
            assert isinstance(client.generate(PROMPT, width=64, height=64), Images)
        assert wait_for(lambda: (cache_dir / "prompt_cache.argus").exists())
        assert wait_for(lambda: deleted(cache_dir, first))
        assert wait_for(lambda: "was deleted under this engine" in first.log_path.read_text())
        # its cache unchanged since the last save: written all the same, that one went with the folder
        assert wait_for(lambda: (cache_dir / "prompt_cache.argus").exists())
        assert_a_second_engine_is_refused(tmp_path, cache_dir)
    finally:
        assert first.stop() == 0
    assert "Traceback" not in first.log_path.read_text()


def test_a_cache_dir_that_cannot_be_made_is_refused_at_start(tmp_path):
    """Before, the engine ended with an OSError traceback (exit 1) with --cache-dir-bytes, and without it served for
    hours, then failed its save at the drain."""
    (tmp_path / "file").write_text("")
    engine = start(tmp_path, tmp_path / "file" / "cache", wait=False)
    try:
        assert engine.process.wait(60) == 2
    finally:
        engine.stop()
    assert f"--cache-dir {tmp_path / 'file' / 'cache'}: not writable" in engine.log_path.read_text()


def test_a_cache_dir_another_engine_took_is_said_once_and_saved_to_again_once_free(tmp_path):
    """Before, each checkpoint logged its ERROR again (`the prompt cache is not saved: ... in use by another engine`)
    for as long as the other engine held the folder, a line every --cache-save-interval, nothing new cached or not.
    The other engine here is the test's own lock on the folder made again, as an engine's is."""
    cache_dir = tmp_path / "cache"
    first = start(tmp_path, cache_dir, "--cache-save-interval", "0.05")
    not_saved = f"the prompt cache is not saved: --cache-dir {cache_dir} is in use by another engine"
    try:
        with ArgusClient(first.client_address, timeout_s=60) as client:
            assert isinstance(client.generate(PROMPT, width=64, height=64), Images)
        assert wait_for(lambda: (cache_dir / "prompt_cache.argus").exists())
        shutil.rmtree(cache_dir)
        cache_dir.mkdir()
        other = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert wait_for(lambda: not_saved in first.log_path.read_text())
            time.sleep(1)  # some 20 checkpoints more, each finding the folder held still
            assert first.log_path.read_text().count(not_saved) == 1
        finally:
            os.close(other)  # the other engine stopped: the folder is free to take, and to save to
        assert wait_for(lambda: (cache_dir / "prompt_cache.argus").exists())
    finally:
        assert first.stop() == 0
    assert "Traceback" not in first.log_path.read_text()
