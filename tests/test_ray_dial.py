"""What Ray actors dial: the engine's worker endpoint, a wildcard host replaced by the address Ray knows the engine's
node by (tcp://0.0.0.0:5556 dialled on another host reached that host, and its actor said hello there for ever), and a
loopback one warned of when the cluster is more than this host's loopback."""

import logging

import pytest

from engine.fleet.ray.launcher import reachable_dial


@pytest.mark.parametrize(
    ("endpoint", "node_ip", "dialled"),
    [
        ("tcp://0.0.0.0:5556", "10.0.0.5", "tcp://10.0.0.5:5556"),
        ("tcp://[::]:5556", "10.0.0.5", "tcp://10.0.0.5:5556"),
        ("tcp://[::]:5556", "fd00::5", "tcp://[fd00::5]:5556"),
        ("tcp://10.0.0.7:5556", "10.0.0.5", "tcp://10.0.0.7:5556"),  # an address of the host's own: as given
        ("tcp://engine.example:5556", "10.0.0.5", "tcp://engine.example:5556"),
        ("tcp://127.0.0.1:5556", "127.0.0.1", "tcp://127.0.0.1:5556"),  # a Ray instance of the engine's own
    ],
)
def test_actors_dial_an_address_every_node_reaches(endpoint, node_ip, dialled, caplog):
    with caplog.at_level(logging.WARNING, "argus.launcher"):
        assert reachable_dial(endpoint, node_ip) == dialled
    assert not caplog.records


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:5556", "tcp://[::1]:5556", "tcp://localhost:5556"])
def test_a_loopback_address_on_a_cluster_beyond_loopback_is_warned_of(endpoint, caplog):
    with caplog.at_level(logging.WARNING, "argus.launcher"):
        assert reachable_dial(endpoint, "10.0.0.5") == endpoint
    [warning] = caplog.records
    assert warning.getMessage() == (
        f"Ray actors dial {endpoint}, this host's loopback: those placed on the cluster's other hosts reach no engine."
        " Listen where they reach (--worker-listen tcp://0.0.0.0:5556) or give --ray-connect tcp://10.0.0.5:5556"
    )
