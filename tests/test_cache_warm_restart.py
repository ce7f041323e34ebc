"""The prompt cache saved in --cache-dir at a drain is the next engine's, through real engines; a save that
fails does not turn the drain into a failure."""

from __future__ import annotations

import os

import pytest
from test_hello_bounds import SIM_MODEL

from engine.client import ArgusClient
from engine_process import start_engine
from protocols.client_messages import Images

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


def generate(engine) -> Images:
    with ArgusClient(engine.client_address, timeout_s=60) as client:
        reply = client.generate(PROMPT, width=64, height=64, seed=1)
    assert isinstance(reply, Images), reply
    return reply


def start(tmp_path, cache_dir, *args: str, wait: bool = True):
    # nirvana: a hit is served at its table level whatever the load, so the restored neighbour shows in the reply
    flags = ("--cache-dir", str(cache_dir), "--policy", "nirvana", "--time-scale", "0", *args)
    return start_engine(tmp_path, *flags, backend="sim", workers=1, wait=wait)


def assert_a_restart_finds_it(tmp_path, cache_dir) -> None:
    """An engine started on cache_dir serves PROMPT from its own saved latents."""
    engine = start(tmp_path, cache_dir)
    try:
        assert generate(engine).images[0].similarity == pytest.approx(1.0)
    finally:
        assert engine.stop() == 0


def save_a_cache(tmp_path, cache_dir) -> None:
    """One engine's run that leaves PROMPT's latents saved in cache_dir."""
    engine = start(tmp_path, cache_dir)
    try:
        generate(engine)
    finally:
        assert engine.stop() == 0


def test_the_next_engine_starts_from_the_cache_the_last_one_saved(tmp_path):
    cache_dir = tmp_path / "cache"
    first = start(tmp_path, cache_dir)
    try:
        assert generate(first).images[0].similarity is None  # an empty cache: a miss
    finally:
        assert first.stop() == 0
    assert (cache_dir / "prompt_cache.argus").is_file()
    assert_a_restart_finds_it(tmp_path, cache_dir)


def test_a_failed_save_is_logged_and_the_drain_still_exits_0(tmp_path):
    """Before, the error ended the engine with a traceback and exit 1: a supervisor would restart an engine
    that was asked to stop."""
    cache_dir = tmp_path / "cache"
    engine = start(tmp_path, cache_dir)
    try:
        generate(engine)
        # where the save writes before its atomic rename: a directory there makes the save fail
        os.makedirs(cache_dir / f"prompt_cache.argus.tmp-{engine.process.pid}")
    finally:
        code = engine.stop()
    assert code == 0
    assert "saving the prompt cache failed" in engine.log_path.read_text()
    assert not (cache_dir / "prompt_cache.argus").exists()


def test_a_cache_saved_by_another_model_is_set_aside_not_served(tmp_path):
    """Before, a tiny engine restored the sim engine's placeholder latents, and every prompt near a cached one failed
    (worker_error: expected a latent of shape (4, 8, 8)); an sdxl engine would have started SD-XL from the tiny
    model's latents, which have SD-XL's shape."""
    cache_dir = tmp_path / "cache"
    save_a_cache(tmp_path, cache_dir)
    second = start_engine(tmp_path, "--cache-dir", str(cache_dir), "--policy", "nirvana", backend="tiny", workers=1)
    try:
        # 50 tiny steps on a loaded machine can take longer than generate()'s minute
        with ArgusClient(second.client_address, timeout_s=600) as client:
            reply = client.generate(PROMPT, width=64, height=64, seed=1)
        assert isinstance(reply, Images), reply
        assert reply.images[0].similarity is None  # refused: a miss
    finally:
        assert second.stop() == 0
    assert f"model {SIM_MODEL!r}; this cache uses" in second.log_path.read_text()
    [set_aside] = cache_dir.glob("prompt_cache.argus.rejected-*")


def test_a_failed_save_leaves_the_last_one_for_the_next_start(tmp_path):
    """Before, the log said the next start would be cold, and the next start restored the older save."""
    cache_dir = tmp_path / "cache"
    save_a_cache(tmp_path, cache_dir)
    second = start(tmp_path, cache_dir)
    in_the_way = cache_dir / f"prompt_cache.argus.tmp-{second.process.pid}"
    try:
        generate(second)  # a hit: the cache changed, so the drain saves (a cache as it was restored is not saved)
        os.makedirs(in_the_way)
    finally:
        assert second.stop() == 0
    assert "the next start restores the last save made" in second.log_path.read_text()
    in_the_way.rmdir()
    third = start(tmp_path, cache_dir)
    try:
        assert generate(third).images[0].similarity == pytest.approx(1.0)
    finally:
        assert third.stop() == 0
