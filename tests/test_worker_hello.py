"""Hellos at the engine: repeats are answered again, a worker that dropped its work has it routed again."""

import asyncio
import logging
import time

import msgspec
import pytest
import zmq
from dispatcher_harness import Harness, settle
from waiting import eventually

from engine.config import LaunchConfig
from engine.fleet.link import WorkerLink
from engine.server import Engine
from engine_process import in_process_config, start_worker, stop_in_process
from protocols.client_messages import Images
from protocols.worker_messages import PROTOCOL_VERSION, Heartbeat, Hello, LevelSet, Welcome
from protocols.worker_messages import Generate as Batch

HELLO = Hello(PROTOCOL_VERSION, "remote-0", "sim", "sim:0", "sim", True, [5, 10], 4, 50, 64, 2048, 1024, 0, 123)
IDENTITY = b"remote-0/abcd"


@pytest.fixture
def link_for(tmp_path):
    """The engine's worker link over a dispatcher harness; what it sends is recorded in the harness."""
    links = []

    def make(h: Harness, time_scale: float = 1.0, heartbeat_interval_s: float = 1.0, timeout_s: float = 10.0):
        address = f"ipc://{tmp_path}/workers"
        link = WorkerLink(
            zmq.Context.instance(),
            [address],
            h.registry,
            h.metrics,
            heartbeat_interval_s,
            timeout_s,
            backend="sim",
            time_scale=time_scale,
        )
        link.bind_dispatcher(h.dispatcher)
        link.send = lambda worker, message: h.sent.append((worker.name, message)) or True
        # and its beats are taken: its workers have no connection, and the beats to them, bounced, would lose them as
        # gone
        link._socket.send = lambda identity, frames: 0
        links.append(link)
        return link

    yield make
    for link in links:
        link.close()


async def test_hellos_queued_while_the_engine_was_down_register_once_and_send_the_work_once(link_for):
    h = Harness()
    link = link_for(h)
    request = h.request()  # waits for a worker
    for _ in range(4):  # one session's retries, delivered together when the engine binds
        link._on_message(IDENTITY, HELLO)
    assert len(h.registry.registered()) == 1
    assert sum(isinstance(m, Welcome) for _, m in h.sent) == 4
    assert len(h.batches()) == 1 and request.jobs[0].attempts == 1 and not request.done


async def test_a_level_acknowledged_late_does_not_move_the_worker_back(link_for):
    """Two moves whose SetLevel and LevelSet cross: before, the first echo set the level the engine had just left."""
    h = Harness()
    link = link_for(h)
    link._on_message(IDENTITY, HELLO)
    worker = h.registry.get(IDENTITY)
    for level in (10, 15):  # the controller moves it twice in a row
        h.dispatcher.worker_level_set(worker, level)
    link._on_message(IDENTITY, LevelSet(10))  # the first move's echo, after the second was sent
    assert worker.level == 15
    assert not h.metrics.registry.get_sample_value("argus_bad_messages_total", {"link": "worker"})


@pytest.mark.parametrize(
    "change",
    [
        {"session": 1},  # the same worker, which lost the engine and forgot the batch
        {"max_size": 1536},
        {"worker_id": "remote-1"},
        {"max_batch": 1},
    ],
)
async def test_a_known_peer_whose_hello_says_a_new_session_or_another_worker_is_sent_its_work_again(link_for, change):
    h = Harness()
    link = link_for(h)
    link._on_message(IDENTITY, HELLO)
    request = h.request()
    (first,) = h.batches()
    link._on_message(IDENTITY, msgspec.structs.replace(HELLO, **change))
    (worker,) = h.registry.registered()
    assert msgspec.structs.asdict(worker.hello).items() >= change.items()  # it is what it says now
    # what was sent to the worker it was is sent again, to the worker it is
    resent = [m for m in h.batches() if m is not first]
    assert [item.request_id for batch in resent for item in batch.items] == [first.items[0].request_id]
    assert request.jobs[0].attempts == 2 and isinstance(resent[0], Batch)


async def test_a_known_peer_whose_hello_takes_a_live_workers_id_is_refused(link_for, caplog):
    h = Harness()
    link = link_for(h)
    link._on_message(IDENTITY, HELLO)
    link._on_message(b"other/1234", msgspec.structs.replace(HELLO, worker_id="other"))
    link._on_message(b"other/1234", HELLO)  # now it claims the id remote-0 has
    assert [w.hello.worker_id for w in h.registry.registered()] == ["remote-0"]
    assert sum(isinstance(m, Welcome) for _, m in h.sent) == 2  # the third hello is not welcomed
    assert "worker id 'remote-0' is in use" in caplog.text


@pytest.mark.parametrize("identity", [b"gpu-0\nERROR argus: forged/1234abcd", b"gpu-0/\xff\xfe"])
async def test_a_hello_from_a_peer_whose_identity_is_no_printable_name_is_refused(link_for, caplog, identity):
    """A worker's identity is its name in every log line and each image's `worker`. Its hello's worker id is refused
    if it could forge a log line, but the identity, set by the peer apart from it, was taken as it came: a newline in
    it began a line of the peer's own in the engine's log."""
    h = Harness()
    link = link_for(h)
    link._on_message(identity, HELLO)
    assert not h.registry.registered()
    assert "refusing worker" in caplog.text and "its identity" in caplog.text
    assert all("\n" not in record.getMessage() for record in caplog.records)


async def test_a_worker_at_another_time_scale_is_welcomed_and_warned_of_once_per_time_scale(link_for, caplog):
    """Before, an engine at --time-scale 0.5 planned with latencies twice those of workers at 0.25 without a word."""
    h = Harness()
    link = link_for(h, time_scale=0.5)
    for i, scale in enumerate([0.5, 0.25, 0.25, 1.0]):  # the second 0.25: a fleet's next worker
        link._on_message(f"w{i}/x".encode(), msgspec.structs.replace(HELLO, worker_id=f"w{i}", time_scale=scale))
    assert len(h.registry.registered()) == 4  # its images are right: only the plan is off
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "time-scale" in r.getMessage()]
    tail = "latency predictions for such workers are wrong; give argus worker and argus serve the same --time-scale"
    assert warned == [
        f"worker w1/x runs the sim at --time-scale 0.25 but this engine's controller plans with --time-scale 0.5: its"
        f" {tail} (said once per time scale)",
        f"worker w3/x runs the sim at --time-scale 1 but this engine's controller plans with --time-scale 0.5: its"
        f" {tail} (said once per time scale)",
    ]


async def test_a_worker_of_smaller_batches_than_planned_is_welcomed_and_warned_of_once_per_size(link_for, caplog):
    """Before, an engine planning each worker's capacity at batches of up to 8 (the sim's default) counted on it from
    remote workers started with --max-batch 2 without a word; one of larger batches is only planned for less."""
    h = Harness()
    link = link_for(h)
    link.planned_max_batch = 8
    for i, largest in enumerate([8, 2, 2, 16, 4]):  # the second 2: a fleet's next worker
        link._on_message(f"w{i}/x".encode(), msgspec.structs.replace(HELLO, worker_id=f"w{i}", max_batch=largest))
    assert len(h.registry.registered()) == 5  # its images are right: only the plan is off
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "batches" in r.getMessage()]
    tail = "may count on more images a second from such workers than they make; give argus serve --max-batch"
    assert warned == [
        f"worker w1/x runs batches of at most 2 but this engine's controller plans for batches of up to 8: it {tail} 2"
        " (said once per batch size)",
        f"worker w4/x runs batches of at most 4 but this engine's controller plans for batches of up to 8: it {tail} 4"
        " (said once per batch size)",
    ]


async def test_images_dropped_by_workers_that_lost_the_engine_count_no_try(link_for):
    """An engine paused past its heartbeat timeout (SIGSTOP, Ctrl-Z, a paused VM) finds, as it resumes, the hello of
    each worker that gave up on it: each rejoin routed the images it held to a worker whose own hello came next, and
    an image no worker had failed failed worker_lost after 3 such hops (1 in 800 requests, 20 sim workers)."""
    h = Harness()
    link = link_for(h)
    hellos = {f"remote-{i}/abcd".encode(): msgspec.structs.replace(HELLO, worker_id=f"remote-{i}") for i in range(4)}
    for identity, hello in hellos.items():
        link._on_message(identity, hello)
    request = h.request()
    for _ in range(3):  # the backlog: the worker the image was just sent to says hello in a new session
        holder = h.batches()[-1]
        identity = next(name for name, message in h.sent if message is holder).encode()
        link._on_message(identity, msgspec.structs.replace(hellos[identity], session=1))
    assert not request.done
    holder = h.batches()[-1]
    name = next(name for name, message in h.sent if message is holder)
    h.finish(h.registry.get(name.encode()), holder)
    await settle()
    assert isinstance(request.future.result(), Images)


async def test_an_engine_paused_past_the_timeout_counts_its_workers_silent_only_from_when_it_resumed(link_for):
    """What the workers sent while the engine was stopped (SIGSTOP, Ctrl-Z, a paused VM) waits unread as it resumes:
    a check for silence that came first lost every worker as silent, each image it held counted a try, and only
    a worker still silent a timeout after the pause is lost."""
    h = Harness()
    link = link_for(h, heartbeat_interval_s=0.05, timeout_s=0.2)
    hellos = {f"remote-{i}/abcd".encode(): msgspec.structs.replace(HELLO, worker_id=f"remote-{i}") for i in range(3)}
    for identity, hello in hellos.items():
        link._on_message(identity, hello)
    watch = asyncio.create_task(link._watch_heartbeats())
    try:
        await asyncio.sleep(0.1)
        time.sleep(0.5)  # the engine's loop stopped past the heartbeat timeout
        await asyncio.sleep(0.1)  # its checks come round before the workers' beats are read
        assert h.metrics.worker_losses.labels("heartbeat")._value.get() == 0
        kept, silent = list(hellos)[:2], list(hellos)[2]
        while h.registry.get(silent) is not None:  # a worker still silent a timeout after the pause is lost
            for identity in kept:
                link._on_message(identity, Heartbeat(0, -1))
            await asyncio.sleep(0.02)
        assert [h.registry.get(identity) is not None for identity in kept] == [True, True]
    finally:
        watch.cancel()


async def test_a_silent_worker_is_lost_though_the_engine_loop_is_often_late(link_for):
    """A loop held past a heartbeat interval now and then (a long collection, a slow call): each hold once put off
    every check a whole timeout, so with one hold per timeout a hung worker was never lost. Only the time held is
    forgiven."""
    h = Harness()
    link = link_for(h, heartbeat_interval_s=0.05, timeout_s=0.2)
    link._on_message(IDENTITY, HELLO)
    watch = asyncio.create_task(link._watch_heartbeats())
    try:
        for _ in range(60):  # a silence of the timeout plus the holds within it is a few rounds; 60 is none on main
            if h.registry.get(IDENTITY) is None:
                break
            time.sleep(0.06)  # the loop held past an interval
            await asyncio.sleep(0.08)
        assert h.registry.get(IDENTITY) is None
        assert h.metrics.worker_losses.labels("heartbeat")._value.get() == 1
    finally:
        watch.cancel()


async def test_a_heartbeat_naming_a_later_batch_sends_again_the_images_of_those_sent_before_it(link_for):
    """A worker runs its batches in the order sent: one beating with the second running never got the first (a
    link cut lost it on the wire), and only the first's images go out again."""
    h = Harness()
    link = link_for(h)
    link._on_message(IDENTITY, msgspec.structs.replace(HELLO, max_batch=1))
    first, second = h.request(prompt="lost"), h.request(prompt="running")
    lost, running = h.batches()
    link._on_message(IDENTITY, Heartbeat(0, lost.batch_id))  # running the first: nothing before it is lost
    assert h.batches() == [lost, running]
    link._on_message(IDENTITY, Heartbeat(0, running.batch_id))
    *_, again = h.batches()
    assert again.batch_id not in (lost.batch_id, running.batch_id)
    assert [item.request_id for item in again.items] == [first.jobs[0].job_id]
    assert not first.done and not second.done


async def test_an_engine_warns_of_a_worker_started_by_hand_with_a_smaller_max_batch(tmp_path, caplog):
    """The engine, not a link the test sets up, knows the batches its controller plans for (the sim's 8 here): the
    warning above came only from a link told so."""
    caplog.set_level(logging.WARNING)
    engine = Engine(in_process_config(tmp_path, launch=LaunchConfig(count=0, backend="sim", time_scale=0)))
    running = asyncio.create_task(engine.run())
    worker = start_worker(f"ipc://{tmp_path}/workers", "sim", "--time-scale", "0", "--max-batch", "2")
    try:
        assert await eventually(lambda: engine.registry.registered(), timeout_s=60)
        warned = [r.getMessage() for r in caplog.records if "runs batches of at most 2" in r.getMessage()]
        assert len(warned) == 1 and "plans for batches of up to 8" in warned[0], warned
    finally:
        worker.terminate()
        await stop_in_process(engine, running, [])
        worker.wait(timeout=30)
