"""The pipe a worker tells its starter why it cannot serve through (workers/cannot_serve.py)."""

import os

from workers.cannot_serve import ReasonPipe


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
