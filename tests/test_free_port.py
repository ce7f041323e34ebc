"""The ports benchmarks and tests start engines on: free, outside the range the kernel gives outgoing connections,
and never the same one twice in a row."""

import itertools
import socket

from loadgen.bench import harness
from loadgen.bench.harness import LOOPBACK, free_port


def ephemeral_range() -> range:
    low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    return range(low, high + 1)


def test_ports_are_drawn_below_the_ephemeral_range_and_not_repeated():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert not any(port in ephemeral_range() for port in ports)


def test_a_port_in_use_is_passed_over(monkeypatch):
    with socket.socket() as holder:
        holder.bind((LOOPBACK, free_port()))
        holder.listen()
        held = holder.getsockname()[1]
        monkeypatch.setattr(harness, "_next_port_index", itertools.count(harness._PORTS.index(held)))
        assert free_port() not in (held, *ephemeral_range())


def test_processes_given_shares_of_the_range_draw_from_parts_that_do_not_meet(monkeypatch):
    monkeypatch.setattr(harness, "_next_port_index", harness._next_port_index)  # this process's draws, put back after
    share = len(harness._PORTS) // 3
    for index in range(3):
        harness.draw_ports_from_share(index, 3)
        parts = {harness._PORTS.index(free_port()) // share for _ in range(share + 10)}  # once round, and on
        assert parts == {index}
