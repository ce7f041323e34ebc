"""The pipe a worker tells its starter why it cannot serve through (workers/cannot_serve.py)."""

import os

import pytest

from workers.cannot_serve import REASON_FD_ENV, ReasonPipe, tell_starter


def test_the_reason_is_read_once_and_asked_again_reads_no_other_file():
    pipe = ReasonPipe()
    os.write(pipe.fd, b"cannot load an SD-XL pipeline from /models/x: ...")
    pipe.started()
    assert pipe.reason() == "cannot load an SD-XL pipeline from /models/x: ..."
    # the read end is closed now: its number goes to the next file this process opens
    other_read, other_write = os.pipe()
    try:
        os.write(other_write, b"another file's bytes")
        assert pipe.reason() == "cannot load an SD-XL pipeline from /models/x: ..."
        assert os.read(other_read, 100) == b"another file's bytes"  # left where they were
    finally:
        os.close(other_read)
        os.close(other_write)


def test_a_worker_that_said_nothing_has_no_reason():
    pipe = ReasonPipe()
    pipe.started()
    assert pipe.reason() is None
    assert pipe.reason() is None


def test_a_reason_cut_inside_a_character_reads_with_a_replacement():
    """A reason longer than the pipe takes is cut at a byte count, maybe inside a character: read, not a traceback."""
    pipe = ReasonPipe()
    os.write(pipe.fd, ("x" + "é" * 3000).encode()[:4096])
    pipe.started()
    assert pipe.reason() == "x" + "é" * 2047 + "\ufffd"


def test_a_reason_is_read_while_a_process_the_worker_started_holds_the_write_end():
    pipe = ReasonPipe()
    inherited = os.dup(pipe.fd)  # a child of the worker's, still running
    try:
        pipe.started()
        assert pipe.reason() is None  # at once, not when that process ends
    finally:
        os.close(inherited)


def test_a_pipe_never_started_closes_both_ends():
    """A launcher whose worker did not start closes the pipe: neither end is left open, start after start."""
    before = set(os.listdir("/proc/self/fd"))
    ReasonPipe().close()
    assert set(os.listdir("/proc/self/fd")) == before


def test_the_worker_tells_its_starter_at_most_what_a_pipe_takes(monkeypatch):
    read_end, write_end = os.pipe()
    try:
        monkeypatch.setenv(REASON_FD_ENV, str(write_end))
        assert tell_starter("é" * 3000) is True
        assert len(os.read(read_end, 65536)) == 4096
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize("value", [None, "stdout", "999999"])
def test_a_worker_not_given_a_pipe_says_it_itself(monkeypatch, value):
    """No variable, one that names no descriptor, or a descriptor not open: False, the worker says it as usual."""
    if value is None:
        monkeypatch.delenv(REASON_FD_ENV, raising=False)
    else:
        monkeypatch.setenv(REASON_FD_ENV, value)
    assert tell_starter("cannot load the model") is False
