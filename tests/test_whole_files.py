"""Two writers of one file at once: each writes through a file beside of its own, and the last to finish wins whole.

They shared `.NAME.partial`: the second truncated and moved the first's half-written file into place (or removed it on
an error), and the first then ended in FileNotFoundError (two `argus profile latency --out same.json` at once)."""

from __future__ import annotations

import os
import stat

import pytest

from engine.whole_files import written_whole


def test_a_writer_finishing_inside_another_leaves_the_other_its_own_file(tmp_path):
    path = tmp_path / "profile.json"
    with written_whole(path) as first:
        first.write("first, ")
        with written_whole(path) as second:
            second.write("second")
        assert path.read_text() == "second"
        first.write("whole")
    assert path.read_text() == "first, whole"
    assert not list(tmp_path.glob(".*.partial"))


def test_a_writer_that_fails_removes_only_its_own_file(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text("the last one")
    with written_whole(path, binary=True) as kept:
        kept.write(b"kept")
        with pytest.raises(RuntimeError), written_whole(path, binary=True) as failed:
            failed.write(b"half")
            raise RuntimeError("cut short")
        assert path.read_text() == "the last one"
    assert path.read_text() == "kept"
    assert not list(tmp_path.glob(".*.partial"))


def test_a_new_file_has_the_permissions_the_umask_gives_not_private_ones(tmp_path):
    """A temporary file (tempfile's) is made 0600: a new profile moved into place would be unreadable by the others
    who read the files this user makes."""
    old = os.umask(0o022)
    try:
        with written_whole(tmp_path / "profile.json") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "profile.json").stat().st_mode) == 0o644
