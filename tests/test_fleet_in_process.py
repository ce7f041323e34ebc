"""A fleet (workers/fleet.py) served in this process against a fake engine: what its workers say on the wire as
one loop drives them all, without a worker process to start."""

import contextlib
import threading

from fake_engine import FakeEngine
from worker_in_process import batch

from protocols.worker_messages import (
    PROTOCOL_VERSION,
    BatchDone,
    Heartbeat,
    Hello,
    ItemCancelled,
    Leaving,
    Welcome,
)
from workers.fleet import Fleet

# a batch of one at this scale keeps its worker busy for far longer than any test waits
FOR_EVER = 1000.0
BEAT_S = 0.2


@contextlib.contextmanager
def fleet_served(count: int = 1, time_scale: float = FOR_EVER):
    """A fleet of `count` serving on a thread, not yet welcomed, and what its serve() raised; stopped on the way out."""
    engine = FakeEngine()
    fleet = Fleet(engine.address, count, "inproc", time_scale=time_scale, max_batch=None, curve=None)
    failed: list[BaseException] = []

    def serve():
        try:
            fleet.serve()
        except Exception as exc:
            failed.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield engine, fleet, thread, failed
    finally:
        fleet.stop()
        thread.join(30)
        engine.close()
    assert not thread.is_alive()


def welcome(engine: FakeEngine) -> Hello:
    hello = engine.receive(Hello)
    engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=BEAT_S, engine_timeout_s=600, level=0))
    return hello


def test_a_batch_running_as_the_fleet_stops_is_answered_cancelled_after_its_leaving():
    """As a lone sim worker gives up a batch it is stopped in: the fleet's backend runs at time scale 0, and its run
    found the images made, answering them done a moment into their simulated time of hours."""
    with fleet_served() as (engine, fleet, thread, failed):
        welcome(engine)
        engine.send(batch(1, "r1"))
        while engine.receive(Heartbeat).running_batch != 1:
            pass
        fleet.stop()
        thread.join(30)
        said = []
        while engine.socket.poll(0):
            said.append(engine.codec.decode(engine.socket.recv_multipart()[1:]))
    assert not failed
    said = [m for m in said if not isinstance(m, Heartbeat)]
    assert [type(m) for m in said] == [Leaving, BatchDone], said
    assert isinstance(said[-1].outcomes[0], ItemCancelled)
