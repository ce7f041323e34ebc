"""A restart with other --levels keeps what still fits: every prompt with a latent at a level the engine keeps, each
latent at its own level K (never by its position among the levels), the others left out in one warning. Before, the
whole file was set aside as another's, and every prompt was lost."""

from __future__ import annotations

import logging

import msgspec
import numpy as np
import pytest
from test_cache_warm_restart import PROMPT, SDXL_SHAPED, start
from test_sim_latents import EMBEDDER, SDXL_LATENTS

from engine.cache import persistence
from engine.cache.persistence import FILE_NAME, CacheFileError
from engine.cache.prompt_cache import PromptCache, ShapeKey, prompt_bytes
from engine.client import ArgusClient
from protocols.client_messages import ImageResult, Images

DIM = 16
SAVED_LEVELS, KEPT_LEVELS = (5, 10, 15), (10, 20)
SHAPE = ShapeKey(50, 64, 64)
# 0.87 from PROMPT for the hash embedder: the table's level 15, a level the second engine no longer keeps
NEAR = "a lighthouse on a cliff at dawn, oil painting"


def vector(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(DIM).astype(np.float32)


def latent(i: int, level: int) -> np.ndarray:
    """Of its prompt and level alone: a latent restored at another level, or another prompt's, is told apart."""
    return np.random.default_rng(1000 * i + level).standard_normal((4, 8, 8)).astype(np.float16)


def ask(engine, prompt: str) -> ImageResult:
    with ArgusClient(engine.client_address, timeout_s=60) as client:
        reply = client.generate(prompt, width=SHAPE.width, height=SHAPE.height, steps=SHAPE.steps, seed=1)
    assert isinstance(reply, Images), reply
    return reply.images[0]


def load(directory, levels, **budgets) -> PromptCache:
    return PromptCache.load(str(directory), "hash", DIM, levels, **({"max_bytes": 1 << 20} | budgets))


def test_a_restart_with_other_levels_keeps_each_latent_at_a_kept_level_at_its_own_level(tmp_path, caplog):
    texts = ["both", "dropped", "spilled"]
    latent_bytes = latent(0, 5).nbytes
    # memory for two latents beside the prompts: the oldest, "spilled"'s at 10, goes to disk
    memory = 2 * latent_bytes + sum(prompt_bytes(text, DIM, len(SAVED_LEVELS)) for text in texts)
    cache = PromptCache("hash", DIM, SAVED_LEVELS, max_bytes=memory, spill_dir=str(tmp_path), spill_bytes=1 << 20)
    spilled = cache.insert("spilled", vector(2), SHAPE, {10: latent(2, 10)})
    dropped = cache.insert("dropped", vector(1), SHAPE, {5: latent(1, 5), 15: latent(1, 15)})
    both = cache.insert("both", vector(0), SHAPE, {k: latent(0, k) for k in SAVED_LEVELS}, seed=7)
    for _ in range(2):
        cache.take_latent(both, 10)
    on_disk = {key for key, _, entry in cache._store.stored() if entry.on_disk}
    assert (spilled, 10) in on_disk and (both, 10) not in on_disk
    cache.save(str(tmp_path / "saved"))
    cache.close()

    spill = tmp_path / "spill"
    with caplog.at_level(logging.WARNING, "argus.cache"):
        restored = load(tmp_path / "saved", KEPT_LEVELS, spill_dir=str(spill), spill_bytes=1 << 20)
    try:
        [said] = [record.getMessage() for record in caplog.records]
        assert said.startswith("4 latents at levels no longer kept (5,15) dropped from ")
        assert "saved with --levels 5,10,15 (this engine keeps 10,20); 1 prompt with none at a kept level" in said
        assert restored.lookup(vector(1), SHAPE).prompt_id != dropped  # gone with its latents: no neighbour to miss
        assert restored.stats().prompts == 2
        for prompt_id, i in ((both, 0), (spilled, 2)):
            neighbour = restored.lookup(vector(i), SHAPE)
            assert (neighbour.prompt_id, neighbour.levels) == (prompt_id, (10,))
        # LCBFU ranks each at K = 10 with its uses, in the tier it was saved from; its seed goes with it
        ranked = {key: (record.level, record.uses, entry.on_disk) for key, record, entry in restored._store.stored()}
        assert ranked == {(spilled, 10): (10, 0, True), (both, 10): (10, 2, False)}
        assert restored.latent_seed(both, 10) == 7
        # the memory budget charges each prompt for the levels kept now, as a prompt inserted now is
        stats = restored.stats()
        kept_prompts = prompt_bytes("both", DIM, 2) + prompt_bytes("spilled", DIM, 2)
        assert (stats.bytes_in_memory, stats.bytes_on_disk) == (latent_bytes + kept_prompts, latent_bytes)
        # served as K = 10: the latent saved at 10, hits counted at 10
        np.testing.assert_array_equal(restored.take_latent(both, 10), latent(0, 10))
        np.testing.assert_array_equal(restored.take_latent(spilled, 10), latent(2, 10))
        assert restored.take_latent(both, 20) is None
        assert restored.stats().hits_by_level == {10: 2, 20: 0}
        restored.insert("both", vector(0), SHAPE, {20: latent(0, 20)})  # a new level: empty, and filled as any
        assert restored.lookup(vector(0), SHAPE).levels == (10, 20)
        restored.save(str(tmp_path / "again"))
    finally:
        restored.close()
    again = load(tmp_path / "again", KEPT_LEVELS)
    try:
        assert again.lookup(vector(0), SHAPE).levels == (10, 20)
        np.testing.assert_array_equal(again.take_latent(both, 10), latent(0, 10))
    finally:
        again.close()


def test_a_file_of_no_latent_at_a_kept_level_is_refused_whole(tmp_path):
    """For this engine it holds nothing; for the levels it names, a good cache, set aside to be renamed back."""
    cache = PromptCache("hash", DIM, SAVED_LEVELS, max_bytes=1 << 20)
    cache.insert("a fox", vector(0), SHAPE, {5: latent(0, 5), 15: latent(0, 15)})
    cache.save(str(tmp_path))
    cache.close()
    with pytest.raises(CacheFileError, match="saved with --levels 5,10,15 and holds no latent at the levels this"):
        load(tmp_path, (20, 25))


def test_an_engine_restarted_with_other_levels_serves_its_saved_prompts_at_the_levels_both_keep(tmp_path):
    """Through real engines, the first saving at --levels 5,10,15, the second restarted on its save at --levels 10,20:
    a prompt near the saved one is served from the saved prompt's latent at K = 10."""
    cache_dir = tmp_path / "cache"
    first = start(tmp_path, cache_dir, "--levels", ",".join(map(str, SAVED_LEVELS)), *SDXL_SHAPED)
    try:
        assert ask(first, PROMPT).similarity is None  # an empty cache: a miss, cached at 5, 10 and 15
    finally:
        assert first.stop() == 0
    second = start(tmp_path, cache_dir, "--levels", ",".join(map(str, KEPT_LEVELS)), *SDXL_SHAPED)
    try:
        with_levels_changed = ask(second, NEAR)
    finally:
        assert second.stop() == 0
    assert with_levels_changed.similarity == pytest.approx(0.87, abs=0.01)
    assert (with_levels_changed.level, with_levels_changed.steps_run) == (10, 40)
    log = second.log_path.read_text()
    assert "2 latents at levels no longer kept (5,15) dropped" in log
    assert "refused the saved prompt cache" not in log and not list(cache_dir.glob(f"{FILE_NAME}.rejected-*"))


def test_a_latent_saved_at_k_10_is_served_and_credited_at_k_10_when_the_levels_change(tmp_path):
    """Each saved latent holds its level's number: the one the second engine served, and credited the hit to in LCBFU,
    is the one saved at K = 10, not the one at the same position among the levels (K = 5 or 15 before, 20 now)."""
    cache_dir = tmp_path / "cache"
    cache = PromptCache("hash", EMBEDDER.dim, SAVED_LEVELS, max_bytes=1 << 20, model=SDXL_LATENTS)
    numbered = {k: np.full((4, 8, 8), k, np.float16) for k in SAVED_LEVELS}
    cache.insert(PROMPT, EMBEDDER.embed([PROMPT])[0], SHAPE, numbered)
    cache.save(str(cache_dir))
    cache.close()
    engine = start(tmp_path, cache_dir, "--levels", ",".join(map(str, KEPT_LEVELS)), *SDXL_SHAPED)
    try:
        image = ask(engine, NEAR)
    finally:
        assert engine.stop() == 0  # the hit changed the cache: the drain saves it
    assert (image.level, image.steps_run) == (10, 40)
    path = cache_dir / FILE_NAME
    saved = persistence.read_cache_file(path, EMBEDDER.identity, EMBEDDER.dim, KEPT_LEVELS, SDXL_LATENTS)
    head = path.read_bytes()[: persistence._PREAMBLE.size]
    meta_bytes = path.read_bytes()[len(head) : len(head) + persistence._PREAMBLE.unpack(head)[2]]
    assert msgspec.msgpack.decode(meta_bytes)["levels"] == list(KEPT_LEVELS)
    [prompt_id] = [p.prompt_id for p in saved.prompts if p.text == PROMPT]
    [at_10] = [latent for latent in saved.latents if latent.prompt_id == prompt_id]
    assert (at_10.level, at_10.uses) == (10, 1)
    np.testing.assert_array_equal(saved.read_latent(at_10), numbered[10])
