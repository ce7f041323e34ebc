"""An engine restoring a large saved cache does not need much more memory for the restore than it holds once
restored. Before, the restore read every vector of the file at once, then gathered each shape's rows into a copy
and normalised a third copy, all beside the index being built: 50,000 prompts of 1,024 dimensions peaked at 1,007
MB of RSS, against 809 MB once restored; now the vectors are read and indexed persistence.VECTOR_ROWS at a time."""

from __future__ import annotations

import numpy as np
import pytest
from test_hello_bounds import SIM_MODEL

from engine.cache.embedders import HashEmbedder
from engine.cache.prompt_cache import PromptCache, ShapeKey
from engine_process import start_engine
from workers.limits import DEFAULT_LEVELS
from workers.model_id import model_latent_shape

EMBEDDER = HashEmbedder()  # 1,024 dimensions: 4 KiB a vector
PROMPTS = 12_000  # 47 MiB of vectors, a dozen blocks of persistence.VECTOR_ROWS
SHAPE = ShapeKey(50, 64, 64)


def memory_mib(pid: int) -> dict[str, float]:
    """The process's resident memory now (VmRSS) and at its highest (VmHWM), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


@pytest.fixture
def saved_cache(tmp_path):
    """PROMPTS prompts with one latent each, of the shape the default sim model's workers take, saved in a folder."""
    latent = np.ones(model_latent_shape("sim", SIM_MODEL, SHAPE.width, SHAPE.height), np.float16)
    cache = PromptCache("hash", EMBEDDER.dim, DEFAULT_LEVELS, max_bytes=1 << 30, model=SIM_MODEL)
    texts = [f"a saved prompt, number {i}" for i in range(PROMPTS)]
    for text, vector in zip(texts, EMBEDDER.embed(texts), strict=True):
        cache.insert(text, vector, SHAPE, {25: latent})
    folder = tmp_path / "cache"
    folder.mkdir()
    cache.save(str(folder))
    cache.close()
    return folder


def test_restoring_a_large_cache_peaks_near_the_memory_it_holds_once_restored(tmp_path, saved_cache):
    engine = start_engine(tmp_path, "--cache-dir", str(saved_cache), "--time-scale", "0", backend="sim", workers=1)
    try:
        assert engine.get("/health")[0] == 200
        memory = memory_mib(engine.process.pid)
        assert f"restored from {saved_cache}" in engine.log() and f"{PROMPTS} prompts" in engine.log()
    finally:
        assert engine.stop() == 0
    vectors_mib = PROMPTS * EMBEDDER.dim * 4 / 2**20
    # the file's vectors read whole, and each shape's copy of them, were each as much again
    assert memory["VmHWM"] - memory["VmRSS"] < vectors_mib / 2, memory
