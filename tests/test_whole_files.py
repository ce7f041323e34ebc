"""Two writers of one file at once: each writes through a file beside of its own, and the last to finish wins whole.

They shared `.NAME.partial`: the second truncated and moved the first's half-written file into place (or removed it on
an error), and the first then ended in FileNotFoundError (two `argus profile latency --out same.json` at once)."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from engine.system.whole_files import written_whole


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


def test_the_standard_output_sent_to_a_file_keeps_what_was_printed_around_it(tmp_path, monkeypatch):
    """`argus profile latency --out - > profile.json` (train-predictor's, loadgen's and bench's --json alike): the
    output was opened anew, which truncated the file and wrote it from its start, over the table printed before it,
    and the `written to /dev/stdout` line printed after it landed inside the JSON, which `argus serve` refused."""
    out = tmp_path / "out.txt"
    saved = os.dup(1)
    try:
        with open(out, "w") as file:
            os.dup2(file.fileno(), 1)
        stdout = open(1, "w", closefd=False)
        monkeypatch.setattr(sys, "stdout", stdout)
        print("the table")  # held in the stream's buffer, as a file's standard output is
        with written_whole("/dev/stdout") as f:
            f.write('{"profile": 1}\n')
        print("written to /dev/stdout")
        stdout.flush()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert out.read_text() == 'the table\n{"profile": 1}\nwritten to /dev/stdout\n'
