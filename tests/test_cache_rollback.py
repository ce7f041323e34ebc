"""A rollback keeps the warm cache: an engine restores a save a newer build wrote when that build only added fields
(a higher minor version), and refuses one of a higher major version clearly, starting cold, through real engines."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import msgspec
import pytest
from test_cache_warm_restart import STEPS, generate, start

from engine.cache import persistence
from engine.cache.persistence import FILE_NAME


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Path:
    """The cache a sim engine saved at its drain, having run one prompt; each test takes a copy (saved_cache)."""
    tmp_path = tmp_path_factory.mktemp("first-run")
    engine = start(tmp_path, tmp_path / "cache")
    try:
        assert generate(engine, steps=STEPS).images[0].similarity is None  # an empty cache: a miss
    finally:
        assert engine.stop() == 0
    return tmp_path / "cache"


@pytest.fixture
def saved_cache(first_run, tmp_path) -> Path:
    return shutil.copytree(first_run, tmp_path / "cache")


def rewrite(path: Path, version: int, change_meta) -> None:
    """The file as a build writing format `version` would have: its meta changed by `change_meta` (a dict, its records
    lists), both digests made anew."""
    data = path.read_bytes()
    magic, _, length, _ = persistence._PREAMBLE.unpack_from(data)
    start_of_meta = persistence._PREAMBLE.size
    meta = msgspec.msgpack.decode(data[start_of_meta : start_of_meta + length])
    change_meta(meta)
    raw = msgspec.msgpack.encode(meta)
    digest = hashlib.blake2b(raw, digest_size=32).digest()
    body = persistence._PREAMBLE.pack(magic, version, len(raw), digest) + raw + data[start_of_meta + length : -32]
    path.write_bytes(body + hashlib.blake2b(body, digest_size=32).digest())


def with_future_fields(meta: dict) -> None:
    """What a newer build that only added fields writes: a higher minor version, a meta key and record fields (trailing
    elements of each array-like record) this build does not know."""
    meta["format_minor"] = persistence.FORMAT_MINOR + 1
    meta["guidance_kinds"] = {"on": [1, 2], "off": []}
    for prompt in meta["prompts"]:
        prompt += [True, "a field of later"]
    for latent in meta["latents"]:
        latent += [[7, 8], {"scheduler": "euler"}]


def test_a_save_of_a_newer_build_that_only_added_fields_is_restored(saved_cache, tmp_path):
    """Before, the decoder refused a field it did not know, the file was set aside and the rolled-back engine started
    cold: every prompt of the warm cache lost."""
    rewrite(saved_cache / FILE_NAME, persistence.FORMAT_VERSION, with_future_fields)
    engine = start(tmp_path, saved_cache)
    try:
        assert generate(engine, steps=STEPS).images[0].similarity == pytest.approx(1.0)  # a hit on its own latents
    finally:
        assert engine.stop() == 0
    log = engine.log_path.read_text()
    newer = f"format {persistence.FORMAT_VERSION}.{persistence.FORMAT_MINOR + 1}; this build's is"
    assert log.count(newer) == 1
    assert "refused the saved prompt cache" not in log
    assert not list(saved_cache.glob(f"{FILE_NAME}.rejected-*"))


def test_a_save_of_a_newer_major_version_is_refused_in_one_line_and_the_engine_starts_cold(saved_cache, tmp_path):
    rewrite(saved_cache / FILE_NAME, persistence.FORMAT_VERSION + 1, with_future_fields)
    engine = start(tmp_path, saved_cache)
    try:
        assert generate(engine, steps=STEPS).images[0].similarity is None  # refused: a miss, and served
    finally:
        assert engine.stop() == 0
    log = engine.log_path.read_text()
    version = persistence.FORMAT_VERSION
    assert f"is in format version {version + 1}, a newer build's: this build reads version {version} alone" in log
    assert "Traceback" not in log
    [set_aside] = saved_cache.glob(f"{FILE_NAME}.rejected-*")  # kept for the build that wrote it


def test_a_save_of_minor_version_0_holds_no_key_the_builds_before_it_know_not(saved_cache):
    """The builds before the minor version decode strictly: a `format_minor` key in every file would have made this
    build's saves refused by them."""
    data = (saved_cache / FILE_NAME).read_bytes()
    *_, length, _ = persistence._PREAMBLE.unpack_from(data)
    meta = msgspec.msgpack.decode(data[persistence._PREAMBLE.size :][:length])
    assert persistence.FORMAT_MINOR == 0
    assert set(meta) == {"embedder", "dim", "levels", "next_prompt_id", "prompts", "latents", "model"}
