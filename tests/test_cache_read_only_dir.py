"""A --cache-dir that became read-only (a file system remounted so after a disk error) keeps its last good save
restorable, through real engines: the checkpoints that fail there leave it whole, and an engine restarted on the
folder while it is still read-only restores it and serves. Before, that engine refused the folder ("--cache-dir
DIR: not writable", exit 2): no cache restored, and nothing served at all."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager

import numpy as np
import pytest
from cache_room import room
from test_cache_warm_restart import SDXL_SHAPED, generate, start
from waiting import wait_for

from engine.cache.embedders import HashEmbedder
from engine.cache.persistence import FILE_NAME
from engine.client import ArgusClient
from protocols.client_messages import Images
from workers.limits import DEFAULT_LEVELS, SDXL_LATENTS, latent_shape


@contextmanager
def read_only(folder):
    """`folder` read-only for this process as it really is for an engine: chmod for a user, but root writes through
    a mode, so for root a read-only bind mount of the folder on itself (skipped where mounts are not allowed)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    mount = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, check=False)
    if mount.returncode != 0:
        pytest.skip(f"root cannot make a read-only folder here: {mount.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        assert not os.access(folder, os.W_OK)
        yield
    finally:
        # lazy: an engine a failed test left running holds the folder open (its lock), and the mount must still go
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def file_identity(path) -> tuple[int, int, int]:
    found = os.stat(path)
    return found.st_ino, found.st_size, found.st_mtime_ns


def test_an_engine_restarted_on_a_read_only_cache_dir_restores_its_last_save_and_serves(tmp_path):
    cache_dir = tmp_path / "cache"
    engine = start(tmp_path, cache_dir, "--cache-save-interval", "1")
    try:
        generate(engine)
        assert wait_for(lambda: f"checkpointed to {cache_dir}: 1 prompt in" in engine.log())
        saved = file_identity(cache_dir / FILE_NAME)
        with read_only(cache_dir):
            generate(engine, steps=11)  # a change, which the next checkpoint fails to write
            assert wait_for(lambda: "checkpointing the prompt cache to" in engine.log())
            assert engine.stop() == 0  # its drain's save fails too
            assert os.listdir(cache_dir) == [FILE_NAME] and file_identity(cache_dir / FILE_NAME) == saved

            # spilling too: its spill folder cannot be made there, and is not
            restarted = start(tmp_path, cache_dir, "--cache-dir-bytes", "1000000", wait=False)
            try:
                restarted.wait_ready(1, timeout_s=120)
                assert generate(restarted).images[0].similarity == pytest.approx(1.0)  # from the last good save
            finally:
                assert restarted.stop() == 0
            assert file_identity(cache_dir / FILE_NAME) == saved
        log = restarted.log_path.read_text()
        assert (
            log.count(f"--cache-dir {cache_dir} cannot be written") == 1 and "(--cache-dir-bytes 1.0 MiB unused)" in log
        )
        assert "prompt cache restored from" in log and "Traceback" not in log
    finally:
        engine.stop()


def test_a_refused_save_that_cannot_be_set_aside_is_said_in_one_line_and_left_as_it_is(tmp_path):
    """Before, the set-aside's OSError failed the restore as a bug would: a traceback, `restoring the saved prompt
    cache failed`."""
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / FILE_NAME).write_bytes(b"not a prompt cache")
    with read_only(cache_dir):
        engine = start(tmp_path, cache_dir, wait=False)
        try:
            engine.wait_ready(1, timeout_s=120)
            assert generate(engine).images[0].similarity is None  # served, cold
        finally:
            assert engine.stop() == 0
    assert (cache_dir / FILE_NAME).read_bytes() == b"not a prompt cache"
    log = engine.log_path.read_text()
    assert log.count("refused the saved prompt cache") == 1 and "it cannot be set aside" in log
    assert "Traceback" not in log


def ask(engine, prompt: str) -> Images:
    """A short run: its latent cached at level 5 alone (level 10 is past any level's share of the run)."""
    with ArgusClient(engine.client_address, timeout_s=60) as client:
        reply = client.generate(prompt, width=512, height=512, seed=1, steps=11)
    assert isinstance(reply, Images), reply
    return reply


@pytest.mark.parametrize("interval", ["0.5", "0"], ids=["a checkpoint", "the drain's save"])
def test_a_save_restored_without_spilling_is_restored_anew_before_it_is_written_over(tmp_path, interval):
    """Restored from a read-only folder with spilling off, the latents that had been spilled found no room in memory
    and were left out; once the folder could be written again, the next checkpoint wrote the save over with what
    memory had kept: the spilled prompts lost, where a restart once the disk was fixed restored them."""
    cache_dir = tmp_path / "cache"
    fox, whale, cat = "a red fox in the snow", "a blue whale under the sea", "a black cat on a wall"
    # SD-XL's latents at 512x512 (32 KiB, float16), each larger than a prompt's own bytes (12 KiB)
    latent = int(np.prod(latent_shape("sim", 512, 512, SDXL_LATENTS))) * 2
    # memory holds the three prompts and one latent: the others go to disk
    memory = room(latent, [fox, whale, cat], HashEmbedder().dim, DEFAULT_LEVELS)
    budgets = ("--cache-bytes", str(memory), "--cache-dir-bytes", "1000000", *SDXL_SHAPED)
    first = start(tmp_path, cache_dir, *budgets)
    try:
        for prompt in (fox, whale):
            ask(first, prompt)
    finally:
        assert first.stop() == 0
    assert f"prompt cache saved to {cache_dir}: 2 prompts" in first.log_path.read_text()

    with read_only(cache_dir):
        engine = start(tmp_path, cache_dir, *budgets, "--cache-save-interval", interval, wait=False)
        try:
            engine.wait_ready(1, timeout_s=120)
            ask(engine, cat)
            assert ask(engine, cat).images[0].similarity == pytest.approx(1.0)  # cached: memory's one prompt now
        except BaseException:
            engine.stop()
            raise
    what = "checkpointed" if interval != "0" else "saved"

    def saves() -> list[str]:
        lines = engine.log_path.read_text().splitlines()
        return [line for line in lines if f"prompt cache {what} to {cache_dir}: " in line]

    try:
        assert interval == "0" or wait_for(saves, timeout_s=60), engine.log()
    finally:
        assert engine.stop() == 0
    # the save's two prompts, restored anew with spilling, and the one cached since; before, memory's one
    assert f"{what} to {cache_dir}: 3 prompts in" in saves()[0]
    log = engine.log_path.read_text()
    assert (
        "1 latent of the saved cache found no room" in log
        and "--cache-dir-bytes 1.0 MiB, unused while the folder" in log
    )
    assert f"--cache-dir {cache_dir} can be written again: its saved cache is restored anew" in log
    assert "Traceback" not in log
