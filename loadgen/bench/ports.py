"""Free loopback ports for the engines and servers a benchmark (or a test) starts, drawn from a share of the range
below the kernel's ephemeral ports."""

from __future__ import annotations

import itertools
import os
import random
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
_LOWEST_PORT = 10000  # above the ports services are given by convention


def _ports_below_ephemeral() -> range:
    try:
        ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_start = 32768  # Linux's default
    return range(_LOWEST_PORT, max(ephemeral_start, _LOWEST_PORT + 1024))


_PORTS = _ports_below_ephemeral()
# "INDEX/SHARES": the share of the range a process draws from, inherited by the processes it starts (a bench run by a
# test), so they draw from the same share
PORT_SHARE_ENV = "ARGUS_PORT_SHARE"


def take_share(index: int, shares: int) -> None:
    """This process draws its ports from the index-th of `shares` equal parts of the range, going round within it:
    processes started together (the test suite's parallel workers) never hand out the same port, where each one's
    random start could fall just behind another's."""
    global _share, _draws
    size = len(_PORTS) // shares if shares > 0 else 0
    if not 0 <= index < shares or size == 0:
        raise ValueError(f"no share {index} of {shares} in ports {_PORTS.start} to {_PORTS.stop - 1}")
    _share = _PORTS[index * size : (index + 1) * size]
    # each call takes the next port, so one process never hands out a port twice while its last holder may still
    # use it (a count: one draw at a time, from any thread)
    _draws = itertools.count(random.randrange(len(_share)))


# the share its starter drew from, or the whole range
take_share(*map(int, os.environ.get(PORT_SHARE_ENV, "0/1").split("/")))


def free_port() -> int:
    """A loopback port free now, for an engine this process starts. It is drawn below the kernel's ephemeral range,
    not by binding port 0: the kernel hands the port bind(0) gave to the next outgoing connection too, and one
    such connection took an engine's port before the engine bound it (CI, 2026-12-03)."""
    for _ in _share:
        port = _share[next(_draws) % len(_share)]
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port on {LOOPBACK} from {_share.start} to {_share.stop - 1}")
