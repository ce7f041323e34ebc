"""Parallel test processes draw their ports from shares of the range that do not meet (conftest.py)."""

import os

from loadgen.bench import ports


def draw_ports_from_share(index: int, shares: int) -> None:
    """This process, and those it starts, draw their ports from the index-th of `shares` equal parts of the range:
    processes started together (the test suite's parallel workers) never hand out the same port, where each one's
    random start could fall just behind another's."""
    ports.take_share(index, shares)
    os.environ[ports.PORT_SHARE_ENV] = f"{index}/{shares}"
