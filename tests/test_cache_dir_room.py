"""The warning of a --cache-dir with less room than the cache may take there says both figures readably, whatever
their size."""

from __future__ import annotations

import logging
import shutil
from collections import namedtuple

import pytest

from engine.cache import cache_dir
from engine.config import CacheConfig

_Usage = namedtuple("_Usage", "total used free")


@pytest.mark.parametrize(
    ("free", "spill", "memory", "words"),
    [
        # a small disk (a tmpfs of a few MiB) and a small cache: both were "0.0 GiB"
        (40 << 20, 10 << 20, 10 << 20, "has 40.0 MiB free, and the cache may take up to 50.0 MiB there"),
        (3 << 10, 2 << 10, 1 << 10, "has 3.0 KiB free, and the cache may take up to 8.0 KiB there"),
        (100, 1 << 10, 0, "has 100 bytes free, and the cache may take up to 3.0 KiB there"),
        (1 << 30, 1 << 30, 1 << 30, "has 1.0 GiB free, and the cache may take up to 5.0 GiB there"),
        # a byte short of a unit rounds up to it: it was "1024.0 KiB"
        ((1 << 20) - 1, 1 << 20, 0, "has 1.0 MiB free, and the cache may take up to 3.0 MiB there"),
    ],
)
def test_a_short_cache_dir_is_warned_of_in_the_unit_its_sizes_need(
    tmp_path, monkeypatch, caplog, free, spill, memory, words
):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(free, 0, free))
    config = CacheConfig(max_bytes=memory, directory=str(tmp_path), directory_bytes=spill)
    with caplog.at_level(logging.WARNING, logger="argus.cache"):
        cache_dir.warn_if_disk_short(config)
    assert [f"--cache-dir {tmp_path} {words}" in record.getMessage() for record in caplog.records] == [True]
