"""A fleet (workers/fleet.py) served in this process against a fake engine: what its workers say on the wire as
one loop drives them all, without a worker process to start."""

import contextlib
import logging
import math
import time

import msgspec
import pytest
import zmq
from fake_engine import FakeEngine
from worker_in_process import batch, serving, welcome

from controller.profiles import LatencyProfile, ProfileLatency
from protocols.curve import KeyPair
from protocols.sockets import make_socket
from protocols.worker_messages import (
    PROTOCOL_VERSION,
    REFUSED,
    Abort,
    BatchDone,
    GenerateItem,
    Heartbeat,
    Hello,
    ItemCancelled,
    ItemDone,
    ItemFailed,
    Leaving,
    Refused,
    Rejoin,
    Shutdown,
    Welcome,
)
from workers import fleet as fleet_module
from workers.fleet import Fleet
from workers.runtime import EngineRefused

# a batch of one at this scale keeps its worker busy for far longer than any test waits
FOR_EVER = 1000.0
BEAT_S = 0.2


@contextlib.contextmanager
def fleet_served(count: int = 1, time_scale: float = FOR_EVER):
    """A fleet of `count` serving on a thread, not yet welcomed, and what its serve() raised; stopped on the way out."""
    with FakeEngine() as engine:
        fleet = Fleet(engine.address, count, "inproc", time_scale=time_scale, max_batch=None, curve=None)
        with serving(fleet.serve, fleet.stop) as (thread, failed):
            yield engine, fleet, thread, failed


@contextlib.contextmanager
def driven(count: int = 1, owned: bool = False, time_scale: float = FOR_EVER):
    """A fleet's workers, each welcomed in turn, driven by the test instead of the fleet's loop: each step taken when
    told. Under an interval of ten minutes, each beats once that is due, not before."""
    with FakeEngine() as engine:
        fleet = Fleet(engine.address, count, "driven", time_scale=time_scale, max_batch=None, curve=None, owned=owned)
        try:
            for worker in fleet.workers:
                worker.tick(time.monotonic())  # its hello
                while engine.receive(Hello).worker_id != worker.identity.decode().split("/")[0]:
                    pass  # another's
                engine.identity = worker.identity
                engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=600, engine_timeout_s=1200, level=0))
                read(worker)
            yield engine, fleet.workers
        finally:
            fleet.close()


def read(worker) -> None:
    """Has the worker read the message the engine sent last, once it is in."""
    assert worker._socket.poll(30_000)
    worker.on_readable()


def test_its_hello_tells_the_fleets_time_scale_and_its_batch_the_time_it_was_busy():
    """Its backend runs at time scale 0: the hello and each image's run_ms are the fleet's, at its own scale."""
    seconds = ProfileLatency(LatencyProfile.bundled()).seconds(0, 50, 1)
    time_scale = 0.2 / seconds  # busy a fifth of a second
    with fleet_served(time_scale=time_scale) as (engine, _, _, _):
        assert welcome(engine, heartbeat_interval_s=BEAT_S).time_scale == time_scale
        engine.send(batch(1, "r1"))
        (done,) = engine.receive(BatchDone).outcomes
    assert isinstance(done, ItemDone)
    # at least the time it was busy; far short of the monotonic clock's reading (the run's start never set)
    assert 199 <= done.run_ms < 200 + 60_000


def test_a_worker_busy_with_a_batch_beats_meanwhile_naming_it():
    with fleet_served() as (engine, _, _, _):
        welcome(engine, heartbeat_interval_s=BEAT_S)
        engine.send(batch(7, "r1"))
        while engine.receive(Heartbeat, timeout_s=30).running_batch != 7:
            pass
        # and again: not only the beat that was due as the batch started
        assert engine.receive(Heartbeat, timeout_s=30).running_batch == 7


def test_workers_welcomed_together_beat_apart():
    """Worker i of n beats first at i/n of the interval from its welcome: a thousand welcomed at once beat at once
    ever after, stalling the engine for milliseconds at each beat."""
    with driven(count=2, time_scale=0.0) as (_, workers):
        now = time.monotonic()
        # when each is back: the first has beaten, due again in ten minutes; the second beats in five
        assert [round((worker.tick(now) - now) / 60) for worker in workers] == [10, 5]


def test_a_worker_that_lost_its_engine_mid_batch_tells_the_next_it_is_idle():
    """The batch of the engine it lost is void (that engine re-dispatches it): its beats named it to the next."""
    with fleet_served() as (engine, _, _, _):
        welcome(engine, heartbeat_interval_s=BEAT_S)
        engine.send(batch(1, "r1"))
        while engine.receive(Heartbeat).running_batch != 1:
            pass
        engine.send(Rejoin())
        welcome(engine, heartbeat_interval_s=BEAT_S)
        assert engine.receive(Heartbeat).running_batch == -1


def test_a_worker_that_lost_its_engine_waits_from_then_for_the_next():
    """The fleet's no-answer warning counts each worker's wait from when it lost its engine: counted from the
    fleet's start, a fleet that had served for an hour warned at once of a wait of an hour."""
    with fleet_served() as (engine, fleet, _, _):
        welcome(engine, heartbeat_interval_s=BEAT_S)
        (worker,) = fleet.workers
        worker.unwelcomed_since -= 3600  # as if welcomed an hour after the fleet started
        engine.receive(Heartbeat)
        lost = time.monotonic()
        engine.send(Rejoin())
        engine.receive(Hello)
        assert worker.unwelcomed_since > lost - 60  # the loop's clock, read as the Rejoin came in


def test_an_unwelcomed_worker_says_hello_again_each_hello_retry():
    """Its tick says when to come back: a hello's retry (a second) later, saying nothing before then."""
    fleet = Fleet("tcp://127.0.0.1:1", 1, "unanswered", time_scale=0.0, max_batch=None, curve=None)
    (worker,) = fleet.workers
    try:
        now = time.monotonic()
        assert worker.tick(now) == worker.tick(now + 0.5) == now + 1.0
        assert worker.tick(now + 1.0) == now + 1.0 + 1.0
    finally:
        fleet.close()


def test_a_batch_is_busy_for_the_time_of_the_items_still_wanted_as_it_starts():
    """Three of its four aborted while it waited behind another, it is timed for one: it took the time of four."""
    with driven(time_scale=1.0) as (engine, (worker,)):
        engine.send(batch(1, "a"))
        read(worker)
        worker.tick(time.monotonic())  # batch 1 starts, busy for seconds
        engine.send(batch(2, "b1", "b2", "b3", "b4"))
        read(worker)
        engine.send(Abort(["a", "b2", "b3", "b4"]))
        read(worker)
        now = time.monotonic()
        # batch 1, every item aborted, is answered; batch 2 starts, and the worker is back when it is done
        assert worker.tick(now) == now + 1.0 * ProfileLatency(LatencyProfile.bundled()).seconds(0, 50, 1)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"items": [GenerateItem(f"r{i}", "a kite", i) for i in range(9)]}, "batch of 9 items"),
        ({"level": 60}, "level 60 is not below steps 50"),
        ({"level": 5}, "level 5 items without a neighbour similarity"),
    ],
)
def test_a_batch_it_refuses_is_answered_at_once_not_after_its_simulated_time(change, says):
    """As a lone sim worker refuses it, before its run: the fleet's worker was busy for the batch's simulated time
    first (a batch of 9 past its largest of 8: 25.5 s at --time-scale 1, the profile's line extended), then refused
    it."""
    with driven() as (engine, (worker,)):
        engine.send(msgspec.structs.replace(batch(1, "r"), **change))
        read(worker)
        worker.tick(time.monotonic())
        refused = engine.receive(BatchDone, timeout_s=30).outcomes
    assert refused and all(isinstance(o, ItemFailed) and o.code == REFUSED and says in o.message for o in refused)


def test_a_shutdown_heard_as_a_batch_runs_leaves_the_batch_queued_behind_it_unrun():
    """As a lone worker's: its engine stops it, and the batch is answered cancelled, for the engine to route."""
    with driven(owned=True, time_scale=0.0) as (engine, (worker,)):
        engine.send(batch(1, "a"))
        read(worker)
        engine.send(batch(2, "b"))
        read(worker)
        engine.send(Shutdown())
        assert worker._socket.poll(30_000)
        now = time.monotonic()
        while worker.tick(now) is not None:  # batch 1 runs, and reads the Shutdown between its steps
            pass
        done = [engine.receive(BatchDone) for _ in range(2)]
    assert [type(d.outcomes[0]) for d in done] == [ItemDone, ItemCancelled]


def test_a_batch_aborted_while_it_runs_is_answered_at_once():
    with fleet_served() as (engine, _, _, _):
        welcome(engine, heartbeat_interval_s=BEAT_S)
        engine.send(batch(1, "r1", "r2"))
        engine.receive(Heartbeat)  # the batch came in before this beat
        engine.send(Abort(["r1", "r2"]))
        outcomes = engine.receive(BatchDone, timeout_s=30).outcomes
    assert all(isinstance(o, ItemCancelled) for o in outcomes) and len(outcomes) == 2


def test_a_batch_running_as_the_fleet_stops_is_answered_cancelled_after_its_leaving():
    """As a lone sim worker gives up a batch it is stopped in: the fleet's backend runs at time scale 0, and its run
    found the images made, answering them done a moment into their simulated time of hours."""
    with fleet_served() as (engine, fleet, thread, failed):
        welcome(engine, heartbeat_interval_s=BEAT_S)
        engine.send(batch(1, "r1"))
        while engine.receive(Heartbeat).running_batch != 1:
            pass
        fleet.stop()
        thread.join(30)
        # what it said on the way out may still be on its way here: read up to the batch's answer
        said = [engine.receive(Leaving, timeout_s=30), engine.receive(BatchDone, timeout_s=30)]
    assert not failed
    assert isinstance(said[-1].outcomes[0], ItemCancelled), said


def test_a_worker_told_to_rejoin_says_hello_again_and_serves_the_engine_that_welcomes_it(caplog):
    with caplog.at_level(logging.INFO, logger="argus"), fleet_served(time_scale=0.0) as (engine, _, _, _):
        first = welcome(engine, heartbeat_interval_s=BEAT_S)
        engine.send(batch(1, "r1"))
        engine.receive(BatchDone)
        while "SIMULATED workers ready" not in caplog.text:
            engine.receive(Heartbeat)  # a loss before its first ready line is followed by that line, not "again"
        engine.send(Rejoin())
        again = welcome(engine, heartbeat_interval_s=BEAT_S)
        engine.send(batch(2, "r2"))
        assert engine.receive(BatchDone).batch_id == 2
        assert again.session == first.session + 1
        for _ in range(50):  # said an interval after the loss: a beat or two, at 0.2 s a beat
            if "ready again" in caplog.text:
                break
            engine.receive(Heartbeat)
        for _ in range(3):
            engine.receive(Heartbeat)  # whole since: said no more
    said = caplog.text
    assert said.count("saying hello again") == 1, said
    assert said.count("fleet of 1 SIMULATED workers ready again") == 1, said


def test_a_fleet_whose_every_worker_id_is_in_use_raises_that_once_all_are_refused():
    with fleet_served(count=2) as (engine, _, thread, failed):
        refused = set()
        while len(refused) < 2:  # each once: a worker may say hello again before its refusal reaches it
            if (hello := engine.receive(Hello, skipping=(Leaving,))).worker_id not in refused:
                refused.add(hello.worker_id)
                engine.send(Refused("in use", id_in_use=True))
        thread.join(30)
        assert not thread.is_alive()  # ended by the refusals, not by the stop on the way out
    assert len(failed) == 1 and failed[0].id_in_use, failed


def test_a_hello_refused_for_another_reason_stops_the_fleets_other_workers_too():
    with fleet_served(count=2) as (engine, _, thread, failed):
        welcomed = welcome(engine, heartbeat_interval_s=BEAT_S).worker_id
        while engine.receive(Hello).worker_id == welcomed:
            pass  # said again before its welcome came
        engine.send(Refused("protocol 3 not supported"))
        thread.join(30)
        assert not thread.is_alive()
    assert len(failed) == 1 and isinstance(failed[0], EngineRefused) and not failed[0].id_in_use


def test_a_fleet_whose_first_worker_was_refused_its_id_still_hears_an_engine_that_requires_curve():
    """Its first worker watches the handshakes for all (they share one key and address): refused its id, it closed its
    socket, and with it the watch. An engine come up on the address with CURVE on then left the fleet waiting for
    ever, warning of an engine that did not answer, where it said why and ended (exit 2)."""
    with fleet_served(count=2) as (engine, _, thread, failed):
        answered = set()
        while len(answered) < 2:
            hello = engine.receive(Hello, skipping=(Leaving,))
            if hello.worker_id in answered:
                continue  # said again before its answer came
            answered.add(hello.worker_id)
            if hello.worker_id == "inproc-0":
                engine.send(Refused("in use", id_in_use=True))
            else:
                engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=BEAT_S, engine_timeout_s=600, level=0))
        engine.receive(Heartbeat, skipping=(Leaving,))  # the second serves
        engine.close()  # its context's end waits for the port to be let go
        engine.context = zmq.Context()
        engine.socket = make_socket(engine.context, zmq.ROUTER, curve_server=KeyPair.generate(), zap_domain="workers")
        engine.socket.bind(engine.address)
        thread.join(60)
        assert not thread.is_alive()
    ((refusal,),) = [failed]
    assert isinstance(refusal, EngineRefused) and "requires CURVE keys" in str(refusal)


def test_a_fleet_that_counted_its_refused_ids_in_its_ready_line_says_it_once(caplog):
    with caplog.at_level(logging.INFO, logger="argus"), fleet_served(count=2) as (engine, _, _, _):
        refused = engine.receive(Hello).worker_id
        engine.send(Refused("in use", id_in_use=True))
        while engine.receive(Hello, skipping=(Leaving,)).worker_id == refused:
            pass  # said again before its refusal came
        engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=BEAT_S, engine_timeout_s=600, level=0))
        for _ in range(50):
            if "workers ready" in caplog.text:
                break
            engine.receive(Heartbeat, skipping=(Leaving,))
        for _ in range(3):
            engine.receive(Heartbeat, skipping=(Leaving,))  # whole since: said no more
    said = caplog.text
    assert said.count("workers ready") == 1, said
    assert "fleet of 1 SIMULATED workers ready (1 of its worker ids is in use" in said, said


class Answering:
    """A worker the engine answers as its first send (its tick) goes out."""

    def __init__(self):
        self.sent = 0
        self.answered = False
        self.wake_at = math.inf

    @property
    def readable(self) -> bool:
        return self.sent == 1 and not self.answered

    def on_readable(self) -> None:
        self.answered = True

    def tick(self, now: float) -> float:
        self.sent += 1
        return now + 600


def test_what_came_in_as_a_worker_sent_is_read_at_once_not_at_its_next_timer():
    """A send can take the socket's descriptor signal with it: the select would not wake for what came in meanwhile,
    and the answer waited for the worker's next timer (a heartbeat interval away)."""
    fleet = Fleet("tcp://127.0.0.1:1", 1, "answering", time_scale=0.0, max_batch=None, curve=None)
    worker = Answering()
    try:
        fleet._serve(worker, time.monotonic(), {worker})
    finally:
        fleet.close()
    assert worker.answered


def test_a_fleet_past_zeromqs_default_of_1023_sockets_makes_them_all():
    """ZeroMQ's context refuses its 1024th socket by default, whatever the open-file limit allows."""
    fleet = Fleet("tcp://127.0.0.1:1", 1100, "many", time_scale=0.0, max_batch=None, curve=None)
    fleet.close()
    assert len(fleet.workers) == 1100


def test_a_fleet_its_engine_started_has_workers_that_leave_at_the_engines_shutdown(monkeypatch):
    """--die-with-parent: each worker is owned, so a Shutdown ends it, not a wait for the next engine."""
    served = []
    monkeypatch.setattr(fleet_module, "exit_with_parent", lambda: None)
    monkeypatch.setattr(fleet_module, "serve_until_stopped", lambda fleet, owned: served.append((fleet, owned)) or 0)
    assert fleet_module.run_fleet("tcp://127.0.0.1:1", 2, "owned", 0.0, None, None, die_with_parent=True) == 0
    ((fleet, owned),) = served
    fleet.close()
    assert owned and all(worker._owned for worker in fleet.workers)
