"""The engine beats every worker once a heartbeat interval, whatever other workers leave meanwhile; a worker whose
beats bounce at two in a row (its connection closed, not dialled again) is lost at once.

A worker that hears nothing from its engine for the heartbeat timeout drops what it runs and says hello again. The
engine spreads its beats over an interval, a slice of the workers each tick; the slice was taken by position, so a
worker that left moved every later one back a place, and the one whose turn came next waited almost two intervals
for its beat: past a 2 s heartbeat timeout (the chaos bench's), it dropped its batch as if the engine had died.
"""

import logging
from collections import defaultdict

import msgspec
import pytest
import zmq
from dispatcher_harness import Harness
from test_worker_hello import HELLO

from engine.fleet import link as worker_link
from engine.fleet.link import _BEAT_TICKS, WorkerLink
from protocols.worker_messages import EngineHeartbeat

WORKERS = 3 * _BEAT_TICKS


class Enough(Exception):
    """Ends the heartbeat watch after the ticks a test wants."""


class Ticks:
    """The heartbeat watch's ticks, run without time passing up to tick `last`; `now`: the tick under way (0 before
    the first). `before(tick)` runs as each begins."""

    def __init__(self, monkeypatch, last: int, before=lambda tick: None):
        self.now = 0
        self._last = last
        self._before = before
        monkeypatch.setattr(worker_link.asyncio, "sleep", self._next)

    async def _next(self, _seconds: float) -> None:
        self.now += 1
        if self.now > self._last:
            raise Enough
        self._before(self.now)

    async def watch(self, link: WorkerLink) -> None:
        try:
            with pytest.raises(Enough):
                await link._watch_heartbeats()
        finally:
            link.close()


def link_over(h: Harness, tmp_path) -> WorkerLink:
    link = WorkerLink(
        zmq.Context.instance(), [f"ipc://{tmp_path}/workers"], h.registry, h.metrics, 1.0, 10.0, backend="sim"
    )
    link.bind_dispatcher(h.dispatcher)
    return link


async def test_a_worker_that_leaves_does_not_delay_the_others_beats(tmp_path, monkeypatch):
    h = Harness()
    link = link_over(h, tmp_path)

    def lose_one(tick: int) -> None:
        if tick <= 2 * _BEAT_TICKS:
            # a worker lost just before each tick of two rounds: the first one there is, the others shift
            h.dispatcher.worker_lost(h.registry.registered()[0], "exited")

    ticks = Ticks(monkeypatch, 3 * _BEAT_TICKS, lose_one)
    beats: dict[bytes, list[int]] = defaultdict(list)  # what the link sends each worker, by tick (Welcome at 0)
    monkeypatch.setattr(link._socket, "send", lambda identity, frames: beats[identity].append(ticks.now) or 0)
    for i in range(WORKERS):
        link._on_message(f"w{i}/0000".encode(), msgspec.structs.replace(HELLO, worker_id=f"w{i}"))
    await ticks.watch(link)
    survivors = [worker.identity for worker in h.registry.registered()]
    assert survivors
    for identity in survivors:
        ticks_beaten = [*beats[identity], ticks.now]
        assert max(b - a for a, b in zip(ticks_beaten, ticks_beaten[1:], strict=False)) <= _BEAT_TICKS, identity


async def test_a_worker_whose_beats_bounce_twice_in_a_row_is_lost_and_one_that_dials_again_between_is_kept(
    tmp_path, monkeypatch, caplog
):
    """A worker process that dies (SIGKILL, a crash) closes its connection, and the beats to it bounce
    (EHOSTUNREACH): its images waited out the heartbeat timeout, 10 s here. A link cut that the worker dials again
    after (in 100 ms) bounces one beat, and loses it nothing."""
    caplog.set_level(logging.INFO)
    h = Harness()
    crashed = h.add_worker("crashed/00000000")
    request = h.request()  # to the one worker there is
    cut, spare = h.add_worker("cut/00000000"), h.add_worker("spare/00000000")
    link = link_over(h, tmp_path)
    ticks = Ticks(monkeypatch, 3 * _BEAT_TICKS)

    def send(identity: bytes, frames: list) -> int:
        bounces = identity == crashed.identity or (identity == cut.identity and ticks.now <= _BEAT_TICKS)
        return zmq.EHOSTUNREACH if bounces else 0

    monkeypatch.setattr(link._socket, "send", send)
    await ticks.watch(link)
    assert [worker.name for worker in h.registry.registered()] == [cut.name, spare.name]
    assert h.metrics.worker_losses.labels("unreachable")._value.get() == 1
    (_, again) = h.batches()
    assert [item.request_id for item in again.items] == [request.jobs[0].job_id]  # sent again to a worker there
    lines = [r.getMessage() for r in caplog.records if r.name == "argus.dispatcher"]
    assert lines == ["worker crashed/00000000 lost (unreachable) holding 1 image (request 'r0-p')"]


async def test_a_worker_lost_to_bounced_beats_is_killed_if_the_engine_started_it(tmp_path, monkeypatch):
    """A process of ours whose connection closed while it lives is hung (SIGSTOP, a paused container): libzmq dropped
    the connection at its ping timeout, before the engine counted its silence. Lost as unreachable and not killed, it
    was never started again. (One that ended is lost by its launcher first, and nothing is killed.)"""
    h = Harness()
    hung = h.add_worker("hung/00000000")
    link = link_over(h, tmp_path)
    killed = []
    link.on_silent = killed.append
    monkeypatch.setattr(link._socket, "send", lambda identity, frames: zmq.EHOSTUNREACH)
    await Ticks(monkeypatch, 3 * _BEAT_TICKS).watch(link)
    assert not h.registry.registered()
    assert killed == [hung]


async def test_a_worker_that_refuses_a_batch_is_killed_if_the_engine_started_it(tmp_path, monkeypatch):
    """So is one a batch finds gone first: an engine held past the ping timeout (a paused VM) sends what waited at
    once, before its beats can bounce twice. Lost as unreachable by the dispatcher and not killed, it was left hung.
    A message that is no batch (Abort, SetLevel, Shutdown) bouncing kills nothing: the loss is the batch's."""
    h = Harness()
    hung = h.add_worker("hung/00000000")
    h.request()
    (batch,) = h.batches()
    link = link_over(h, tmp_path)
    killed = []
    link.on_silent = killed.append
    monkeypatch.setattr(link._socket, "send", lambda identity, frames: zmq.EHOSTUNREACH)
    try:
        assert not link.send(hung, EngineHeartbeat())
        assert not killed
        assert not link.send(hung, batch)
        assert killed == [hung]
    finally:
        link.close()


async def test_a_worker_whose_link_is_cut_once_and_again_rounds_later_is_kept(tmp_path, monkeypatch, caplog):
    """Only two bounces in a row lose a worker: one beat bounced an hour ago (a link cut it dialled again after) and
    one now are two cuts, each lasting less than an interval."""
    caplog.set_level(logging.INFO)
    h = Harness()
    cut = h.add_worker("cut/00000000")
    link = link_over(h, tmp_path)
    ticks = Ticks(monkeypatch, 3 * _BEAT_TICKS)

    def send(identity: bytes, frames: list) -> int:
        cut_now = (ticks.now - 1) // _BEAT_TICKS != 1  # the first and the third round of beats, not the second
        return zmq.EHOSTUNREACH if identity == cut.identity and cut_now else 0

    monkeypatch.setattr(link._socket, "send", send)
    await ticks.watch(link)
    assert [worker.name for worker in h.registry.registered()] == [cut.name]
    assert not [r for r in caplog.records if r.name == "argus.dispatcher"]


async def test_a_worker_gone_after_the_engines_shutdown_left_and_is_no_loss(tmp_path, monkeypatch, caplog):
    """A local worker that reads the engine's Shutdown before its stop signal stops without a Leaving (the engine
    asked), and closes its connection. While the engine went on stopping (waiting for its other workers, saving a
    large prompt cache: 2.5 s for 1.1 GB), the beats to it bounced: a clean stop warned `worker local-1/... lost
    (unreachable) holding 0 images` and counted a loss, seen at the end of a long run."""
    caplog.set_level(logging.INFO)
    h = Harness()
    stopped = h.add_worker("stopped/00000000")
    link = link_over(h, tmp_path)
    killed = []
    link.on_silent = killed.append
    monkeypatch.setattr(link._socket, "send", lambda identity, frames: 0)
    link.shutdown_all()
    monkeypatch.setattr(link._socket, "send", lambda identity, frames: zmq.EHOSTUNREACH)
    await Ticks(monkeypatch, 3 * _BEAT_TICKS).watch(link)
    assert not h.registry.registered()
    assert h.metrics.worker_losses.labels("unreachable")._value.get() == 0
    assert not killed  # it ended as told: its launcher waits for it
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "argus.dispatcher"]
    assert lines == [(logging.INFO, f"worker {stopped.name} left")]
