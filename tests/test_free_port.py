"""The ports benchmarks and tests start engines on: free, outside the range the kernel gives outgoing connections,
and never the same one twice in a row."""

import itertools
import socket
import subprocess
import sys

import pytest
from port_shares import draw_ports_from_share

from loadgen.bench import ports
from loadgen.bench.ports import LOOPBACK, free_port


def ephemeral_range() -> range:
    low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    return range(low, high + 1)


def test_ports_are_drawn_below_the_ephemeral_range_and_not_repeated():
    drawn = [free_port() for _ in range(50)]
    assert len(set(drawn)) == 50
    assert not any(port in ephemeral_range() for port in drawn)


def test_a_port_in_use_is_passed_over(monkeypatch):
    with socket.socket() as holder:
        holder.bind((LOOPBACK, free_port()))
        holder.listen()
        held = holder.getsockname()[1]
        monkeypatch.setattr(ports, "_draws", itertools.count(ports._share.index(held)))
        assert free_port() not in (held, *ephemeral_range())


def test_processes_given_shares_of_the_range_draw_from_parts_that_do_not_meet(monkeypatch):
    # this process's draws, put back after
    for name in ("_share", "_draws"):
        monkeypatch.setattr(ports, name, getattr(ports, name))
    monkeypatch.setenv(ports.PORT_SHARE_ENV, "0/1")  # the whole range; put back (or unset) after
    size = len(ports._PORTS) // 3
    for index in range(3):
        draw_ports_from_share(index, 3)
        parts = {ports._PORTS.index(free_port()) // size for _ in range(size + 10)}  # once round, and on
        assert parts == {index}
    # and the processes it starts draw from its share
    drawn = subprocess.run(
        [sys.executable, "-c", "from loadgen.bench.ports import free_port; print(free_port())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert ports._PORTS.index(int(drawn.stdout)) // size == 2


@pytest.mark.parametrize(("index", "shares"), [(2, 2), (-1, 2), (0, 0), (0, 10**6)])
def test_a_share_that_is_not_there_is_refused(index, shares):
    with pytest.raises(ValueError, match=f"no share {index} of {shares}"):
        draw_ports_from_share(index, shares)
