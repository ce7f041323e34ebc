"""The engine beats every worker once a heartbeat interval, whatever other workers leave meanwhile.

A worker that hears nothing from its engine for the heartbeat timeout drops what it runs and says hello again. The
engine spreads its beats over an interval, a slice of the workers each tick; the slice was taken by position, so a
worker that left moved every later one back a place, and the one whose turn came next waited almost two intervals
for its beat: past a 2 s heartbeat timeout (the chaos bench's), it dropped its batch as if the engine had died.
"""

from collections import defaultdict

import msgspec
import pytest
import zmq
from dispatcher_harness import Harness
from test_worker_hello import HELLO

from engine import worker_link
from engine.worker_link import _BEAT_TICKS, WorkerLink

WORKERS = 3 * _BEAT_TICKS


class Enough(Exception):
    """Ends the heartbeat watch after the ticks a test wants."""


async def test_a_worker_that_leaves_does_not_delay_the_others_beats(tmp_path, monkeypatch):
    h = Harness()
    link = WorkerLink(
        zmq.Context.instance(), [f"ipc://{tmp_path}/workers"], h.registry, h.metrics, 1.0, 10.0, backend="sim"
    )
    link.bind_dispatcher(h.dispatcher)
    tick = 0
    beats: dict[bytes, list[int]] = defaultdict(list)  # what the link sends each worker, by tick (Welcome at 0)
    monkeypatch.setattr(link._socket, "send", lambda identity, frames: beats[identity].append(tick) or 0)
    for i in range(WORKERS):
        link._on_message(f"w{i}/0000".encode(), msgspec.structs.replace(HELLO, worker_id=f"w{i}"))

    async def next_tick(_seconds: float) -> None:
        nonlocal tick
        tick += 1
        if tick > 3 * _BEAT_TICKS:
            raise Enough
        if tick <= 2 * _BEAT_TICKS:
            # a worker lost just before each tick of two rounds: the first one there is, the others shift
            h.dispatcher.worker_lost(h.registry.registered()[0], "exited")

    monkeypatch.setattr(worker_link.asyncio, "sleep", next_tick)
    try:
        with pytest.raises(Enough):
            await link._watch_heartbeats()
    finally:
        link.close()
    survivors = [worker.identity for worker in h.registry.registered()]
    assert survivors
    for identity in survivors:
        ticks = [*beats[identity], tick]
        assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) <= _BEAT_TICKS, identity
