"""The prompt cache saved in --cache-dir at a drain is the next engine's, through real engines; a save that
fails does not turn the drain into a failure."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_hello_bounds import SIM_MODEL
from test_sim_latents import SDXL_LATENTS
from waiting import wait_for

from engine.cache.embedders import HashEmbedder
from engine.cache.prompt_cache import PromptCache, ShapeKey
from engine.client import ArgusClient
from engine_process import start_engine
from protocols.client_messages import Images
from workers.limits import DEFAULT_LEVELS

PROMPT = "a lighthouse on a cliff at dusk, oil painting"
# a short run, cached at levels 5 and 10
STEPS = 11
# sim workers of another model than start()'s: they pass latents of SD-XL's shape (a 64x64 image's: 4 x 8 x 8)
SDXL_SHAPED = ("--sim-latents", "sdxl")


def generate(engine, **fields) -> Images:
    with ArgusClient(engine.client_address, timeout_s=60) as client:
        reply = client.generate(PROMPT, width=64, height=64, seed=1, **fields)
    assert isinstance(reply, Images), reply
    return reply


def start(tmp_path, cache_dir, *args: str, wait: bool = True):
    # nirvana: a hit is served at its table level whatever the load, so the restored neighbour shows in the reply
    flags = ("--cache-dir", str(cache_dir), "--policy", "nirvana", "--time-scale", "0", *args)
    return start_engine(tmp_path, *flags, backend="sim", workers=1, wait=wait)


def assert_a_restart_finds_it(tmp_path, cache_dir, **fields) -> None:
    """An engine started on cache_dir serves PROMPT from its own saved latents."""
    engine = start(tmp_path, cache_dir)
    try:
        assert generate(engine, **fields).images[0].similarity == pytest.approx(1.0)
    finally:
        assert engine.stop() == 0


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, Images]:
    """One sim engine's run on an empty --cache-dir: the cache it saved at its drain, and its reply. Each test that
    starts from that cache takes a copy (saved_cache)."""
    tmp_path = tmp_path_factory.mktemp("first-run")
    engine = start(tmp_path, tmp_path / "cache")
    try:
        reply = generate(engine, steps=STEPS)
    finally:
        assert engine.stop() == 0
    return tmp_path / "cache", reply


@pytest.fixture
def saved_cache(first_run, tmp_path) -> Path:
    return shutil.copytree(first_run[0], tmp_path / "cache")


def test_a_failed_save_is_logged_and_the_drain_still_exits_0(tmp_path):
    """Before, the error ended the engine with a traceback and exit 1: a supervisor would restart an engine
    that was asked to stop. A save the disk fails (full, read-only) is one line, checkpoints' too: each logged a
    traceback (every --cache-save-interval for as long as the disk stayed full). Then each failed checkpoint logged
    its line again, for as long as the disk stayed so: said once, counted in the metric, until one is written."""
    cache_dir = tmp_path / "cache"
    engine = start(tmp_path, cache_dir, "--cache-save-interval", "0.05", wait=False)
    checkpoint_failed = f"checkpointing the prompt cache to {cache_dir} failed ([Errno 21] Is a directory"
    try:
        # where the save writes before its atomic rename: a directory there makes every save fail (a start leaves it)
        in_the_way = cache_dir / f"prompt_cache.argus.tmp-{engine.process.pid}"
        os.makedirs(in_the_way)
        engine.wait_ready(1)
        generate(engine)
        # what an alert reads: the metric counts each failure, the log says the first of them, in words
        assert wait_for(lambda: engine.metric("argus_cache_checkpoints_total", outcome="failed") >= 3)
        assert engine.log_path.read_text().count(checkpoint_failed) == 1
        assert engine.metric("argus_cache_checkpoints_total", outcome="written") == 0
        in_the_way.rmdir()  # the disk has room again: the next checkpoint is written, and says how many failed
        assert wait_for(lambda: "checkpointing the prompt cache works again" in engine.log_path.read_text())
        os.makedirs(in_the_way)
        generate(engine, steps=STEPS)  # something new to save: failing again is said again
        assert wait_for(lambda: engine.log_path.read_text().count(checkpoint_failed) == 2)
    finally:
        code = engine.stop()
    assert code == 0
    log = engine.log_path.read_text()
    assert f"saving the prompt cache to {cache_dir} failed ([Errno 21] Is a directory" in log
    assert "Traceback" not in log
    assert (cache_dir / "prompt_cache.argus").exists()  # the checkpoint written between the failures stays


def test_a_cache_saved_by_another_model_is_set_aside_not_served(saved_cache, tmp_path):
    """Before, a tiny engine restored the sim engine's placeholder latents, and every prompt near a cached one failed
    (worker_error: expected a latent of shape (4, 8, 8)); an sdxl engine would have started SD-XL from the tiny
    model's latents, which have SD-XL's shape. The other model here: sim workers passing latents of SD-XL's shape
    (--sim-latents sdxl), as the tiny model's are."""
    second = start(tmp_path, saved_cache, *SDXL_SHAPED)
    try:
        # the saved latents' request, steps and all
        assert generate(second, steps=STEPS).images[0].similarity is None  # refused: a miss
    finally:
        assert second.stop() == 0
    assert f"model {SIM_MODEL!r}; this cache uses" in second.log_path.read_text()
    [set_aside] = saved_cache.glob("prompt_cache.argus.rejected-*")


def test_the_next_engine_starts_from_the_last_save_and_a_failed_save_leaves_it_for_the_next(
    first_run, saved_cache, tmp_path
):
    """Before, a failed save's log said the next start would be cold, and the next start restored the older save."""
    assert first_run[1].images[0].similarity is None  # an empty cache: a miss
    assert (saved_cache / "prompt_cache.argus").is_file()
    second = start(tmp_path, saved_cache)
    in_the_way = saved_cache / f"prompt_cache.argus.tmp-{second.process.pid}"
    try:
        # a hit: the cache changed, so the drain saves (a cache as it was restored is not saved)
        assert generate(second, steps=STEPS).images[0].similarity == pytest.approx(1.0)
        os.makedirs(in_the_way)
    finally:
        assert second.stop() == 0
    assert "the next start restores the last save made" in second.log_path.read_text()
    in_the_way.rmdir()
    assert_a_restart_finds_it(tmp_path, saved_cache, steps=STEPS)


def test_a_saved_latent_of_another_shape_than_the_workers_take_is_left_out_not_served(tmp_path):
    """An edited save, or one a build made before the engine checked what workers return: its latents are their
    records' shape, of the right byte count, but not what the workers take at 64x64 (4 x 8 x 8: SD-XL's shape, the tiny
    model's, and that of sim workers passing SD-XL's). Before, it was restored, and every request near its prompt
    failed (worker_error: expected a float16 or float32 latent of shape (4, 8, 8), got float16 (4, 16, 4)), a hit
    counted each time."""
    embedder, other = HashEmbedder(), "a bowl of ramen on a wooden table, studio photo"
    saved = PromptCache("hash", embedder.dim, DEFAULT_LEVELS, 1 << 20, model=SDXL_LATENTS)
    shape = ShapeKey(STEPS, 64, 64)
    saved.insert(PROMPT, embedder.embed([PROMPT])[0], shape, {k: np.zeros((4, 16, 4), np.float16) for k in (5, 10)})
    saved.insert(other, embedder.embed([other])[0], shape, {k: np.zeros((4, 8, 8), np.float16) for k in (5, 10)})
    saved.save(str(tmp_path / "cache"))
    saved.close()
    engine = start(tmp_path, tmp_path / "cache", *SDXL_SHAPED)
    try:
        with ArgusClient(engine.client_address, timeout_s=60) as client:
            left_out = client.generate(PROMPT, width=64, height=64, seed=1, steps=STEPS)
            restored = client.generate(other, width=64, height=64, seed=1, steps=STEPS)
    finally:
        assert engine.stop() == 0
    assert isinstance(left_out, Images), left_out
    assert left_out.images[0].similarity != pytest.approx(1.0)  # not served from its own latents
    assert isinstance(restored, Images) and restored.images[0].similarity == pytest.approx(1.0), restored
    assert "2 saved latents no run can start from, left out" in engine.log_path.read_text()
