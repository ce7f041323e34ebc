"""Workers lost together are one line in the engine's log, a worker lost alone one of its own: a fleet of a thousand
whose process died, whose key was revoked or which went silent made a thousand WARNINGs (and a thousand ERRORs)."""

import asyncio
import logging
import signal

import zmq
from dispatcher_harness import PROFILE, Harness, settle
from test_engine_beats import Ticks
from test_sim_fleet import start_fleet
from waiting import eventually, wait_for

from engine.fleet.link import _BEAT_TICKS, WorkerLink
from engine_process import start_engine, start_worker
from protocols.worker_messages import Generate as Batch


def said(caplog) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name in ("argus.dispatcher", "argus.workers")]


def fleet(h: Harness, count: int) -> list:
    return [h.add_worker(f"fleet-{i}/{i:08x}") for i in range(count)]


def link_over(h: Harness, tmp_path, admits=None, interval_s: float = 1.0, timeout_s: float = 10.0) -> WorkerLink:
    link = WorkerLink(
        zmq.Context.instance(), [f"ipc://{tmp_path}/workers"], h.registry, h.metrics, interval_s, timeout_s,
        backend="sim", admits=admits,
    )  # fmt: skip
    link.bind_dispatcher(h.dispatcher)
    # the harness's workers have no connection: the beats to them, bounced, would lose them as gone, not silent
    link._socket.send = lambda identity, frames: 0
    return link


async def test_the_gone_workers_an_image_meets_as_it_is_routed_again_are_lost_in_one_line(caplog):
    """A fleet SIGKILLed: its images, routed again, meet its other workers one after another, each lost unreachable."""
    caplog.set_level(logging.INFO)
    h = Harness()
    first, *others = fleet(h, 6)
    h.request()  # to the first idle worker
    h.gone = {worker.name for worker in others}
    h.dispatcher.worker_lost(first, "exited")
    assert said(caplog) == [
        (
            "WARNING",
            "6 workers lost together (1 exited, 5 unreachable) holding 1 image (request 'r0-p'): fleet-0/00000000,"
            " fleet-1/00000001, fleet-2/00000002, fleet-3/00000003, fleet-4/00000004 and 1 more",
        )
    ]


async def test_a_worker_lost_alone_is_said_as_before(caplog):
    caplog.set_level(logging.INFO)
    h = Harness()
    lost, kept = fleet(h, 2)
    h.request(n=2)
    h.dispatcher.worker_lost(lost, "exited")
    assert said(caplog) == [("WARNING", "worker fleet-0/00000000 lost (exited) holding 1 image (request 'r0-p')")]
    assert len(h.batches(kept.name)) == 2


def test_a_fleet_whose_key_is_revoked_is_lost_in_one_line(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    h = Harness()
    workers = fleet(h, 3)
    for worker in workers:
        worker.curve_key = b"the fleet's key"
    link = link_over(h, tmp_path, admits=lambda key: False)
    try:
        link.drop_revoked()
    finally:
        link.close()
    assert not h.registry.registered()
    names = "fleet-0/00000000, fleet-1/00000001, fleet-2/00000002"
    assert said(caplog) == [("WARNING", f"3 workers lost together (revoked) holding 0 images: {names}")]


async def test_a_fleet_gone_silent_is_one_error_and_a_worker_silent_alone_two_lines(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    h = Harness()
    workers = fleet(h, 4)
    h.request()
    link = link_over(h, tmp_path, interval_s=0.02, timeout_s=0.01)
    watch = asyncio.create_task(link.run())
    try:
        for worker in workers:
            worker.last_seen = 0.0  # silent for ages, all of them
        assert await eventually(lambda: not h.registry.registered())
        (fleet_line,) = said(caplog)
        assert fleet_line == (
            "ERROR",
            "4 workers lost together (heartbeat) holding 1 image (request 'r0-p'): fleet-0/00000000, fleet-1/00000001,"
            " fleet-2/00000002, fleet-3/00000003",
        )
        caplog.clear()
        alone = h.add_worker("lone/0000abcd")
        alone.last_seen = 0.0
        assert await eventually(lambda: not h.registry.registered())
        assert said(caplog) == [
            ("ERROR", "worker lone/0000abcd silent for over 0.01 s (--heartbeat-timeout)"),
            # the fleet's image, which waited for a worker (it failed, before, on the fleet's workers in turn)
            ("WARNING", "worker lone/0000abcd lost (heartbeat) holding 1 image (request 'r0-p')"),
        ]
    finally:
        watch.cancel()
        link.close()


async def test_a_fleet_whose_beats_bounce_is_lost_in_one_line(tmp_path, monkeypatch, caplog):
    """A fleet's process killed, the beats to its workers bounce, and each is found gone at its own tick of a round of
    beats: a line for each tick made up to 20."""
    caplog.set_level(logging.INFO)
    h = Harness()
    workers = fleet(h, 40)
    h.request()
    h.gone = {worker.name for worker in workers}
    link = link_over(h, tmp_path)
    link._socket.send = lambda identity, frames: zmq.EHOSTUNREACH
    ticks = Ticks(monkeypatch, 3 * _BEAT_TICKS)
    await ticks.watch(link)
    assert len({hash(worker.identity) % _BEAT_TICKS for worker in workers}) > 1  # found at ticks of their own
    assert not h.registry.registered()
    ((level, line),) = said(caplog)
    assert level == "WARNING"
    assert line.startswith("40 workers lost together (unreachable) holding 1 image (request 'r0-p'): fleet-")


async def test_images_of_a_fleet_whose_key_is_revoked_go_to_a_worker_that_stays_not_fail(tmp_path):
    """Lost in turn, the revoked workers took each other's images, each loss a try: the image failed after three
    (worker_lost) while a worker of another key sat idle."""
    h = Harness()
    revoked = fleet(h, 5)
    for worker in revoked:
        worker.curve_key = b"the fleet's key"
    h.request()  # to the fleet's first worker
    stays = h.add_worker("stays/0000abcd")
    link = link_over(h, tmp_path, admits=lambda key: key != b"the fleet's key")
    try:
        link.drop_revoked()
    finally:
        link.close()
    assert len(h.batches(stays.name)) == 1


async def test_images_of_a_fleet_gone_silent_go_to_a_worker_that_stays_not_fail(tmp_path):
    h = Harness()
    silent = fleet(h, 5)
    request = h.request()
    stays = h.add_worker("stays/0000abcd")
    link = link_over(h, tmp_path, interval_s=0.02, timeout_s=0.01)
    watch = asyncio.create_task(link.run())
    try:
        stays.last_seen = float("inf")  # beats on
        for worker in silent:
            worker.last_seen = 0.0
        assert await eventually(lambda: [w.name for w in h.registry.registered()] == [stays.name])
        assert not request.future.done() and len(h.batches(stays.name)) == 1
    finally:
        watch.cancel()
        link.close()


async def test_a_worker_lost_with_others_is_routed_none_of_their_images_once_its_queue_was_taken():
    """A worker with room took the job queued on one of the workers lost together (as the first of them was lost),
    which filed that one among the picks again: a third's image was sent to it next, and lost with it, a try counted
    (with max_attempts 2, the request failed worker_lost while another worker had room)."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=2, max_attempts=2)
    holder, second, third, stays = (h.add_worker(f"{name}/0000000{i}", max_batch=1) for i, name in enumerate("abcd"))
    running = [h.request() for _ in range(4)]  # one each, for a second
    h.request(slo_ms=5_000)  # the most urgent job, queued on the first to join
    assert len(holder.queue) == 1
    h.clock.now += 1.5  # each worker is past its batch's estimated end: it has room for another
    lost = [second, third, holder]  # the second's image goes to `stays`, which takes the holder's queued job too
    h.dispatcher.withhold(lost)
    with h.dispatcher.loss_lines.together():
        for worker in lost:
            h.dispatcher.worker_lost(worker, "heartbeat")
    await settle()
    assert not any(request.done for request in running)
    assert {name for name, message in h.sent[4:] if isinstance(message, Batch)} == {stays.name}


def left_lines(engine) -> list[str]:
    """What the engine's lines of workers that left say."""
    lines = engine.log_path.read_text().splitlines()
    return [line.partition("]: ")[2] for line in lines if "argus.dispatcher" in line and " left" in line]


def test_a_fleet_stopped_leaves_in_one_line_and_a_worker_alone_in_its_own(tmp_path):
    """Each worker of a fleet stopped (SIGTERM) says Leaving in a message of its own: a line each made 200 INFOs, one
    "worker ... left" for each worker of a fleet of 200."""
    engine = start_engine(tmp_path, workers=0, backend="sim", wait=False)
    fleet = start_fleet(tmp_path, engine.worker_address, 20, "fleet")
    lone = start_worker(engine.worker_address, "sim", "--time-scale", "0.1", "--worker-id", "lone")
    try:
        workers = engine.wait_ready(21, timeout_s=120)["workers"]
        (lone_name,) = [w["name"] for w in workers if w["pid"] == lone.pid]
        fleet.send_signal(signal.SIGTERM)
        assert fleet.wait(timeout=30) == 0
        assert wait_for(lambda: len(engine.ready()["workers"]) == 1)
        wait_for(lambda: any("left together" in line for line in left_lines(engine)))
        lone.send_signal(signal.SIGTERM)
        assert lone.wait(timeout=30) == 0
        assert wait_for(lambda: any(lone_name in line for line in left_lines(engine)))
        said = left_lines(engine)
        assert len(said) == 2, said
        fleet_line, lone_line = said
        assert fleet_line.startswith("20 workers left together: fleet-") and fleet_line.endswith(" and 15 more")
        assert lone_line == f"worker {lone_name} left"
    finally:
        for worker in (fleet, lone):
            if worker.poll() is None:
                worker.kill()
        assert engine.stop() == 0


async def test_a_busy_fleet_stopped_leaves_in_one_line_counting_each_image_once(caplog):
    """Stopped (SIGTERM) as its workers held images, a fleet's Leavings came as they do for an idle one, within the
    window a Leaving opens, and a WARNING each was said at once: a fleet of a thousand under load made a thousand,
    each image counted again on every leaving worker it was routed to in turn."""
    caplog.set_level(logging.INFO)
    h = Harness()
    workers = fleet(h, 3)
    h.request(n=3)  # one image a worker
    for worker in workers:
        h.dispatcher.loss_lines.leaves.gather()  # as WorkerLink does at each worker's Leaving
        h.dispatcher.worker_lost(worker, "left")
    h.dispatcher.loss_lines.leaves.say()  # the window's end
    assert said(caplog) == [
        (
            "WARNING",
            "3 workers lost together (left) holding 3 images (request 'r0-p'): fleet-0/00000000, fleet-1/00000001,"
            " fleet-2/00000002",
        )
    ]


async def test_the_line_of_a_fleet_whose_beats_bounce_is_said_a_round_after_the_first_found_gone(
    tmp_path, monkeypatch, caplog
):
    """Not held until the engine stops: an operator reads of the loss while the engine runs on."""
    caplog.set_level(logging.INFO)
    h = Harness()
    fleet(h, 40)
    link = link_over(h, tmp_path)
    link._socket.send = lambda identity, frames: zmq.EHOSTUNREACH
    said_before: dict[int, int] = {}  # lines said as each tick began
    ticks = Ticks(monkeypatch, 4 * _BEAT_TICKS, lambda tick: said_before.__setitem__(tick, len(said(caplog))))
    await ticks.watch(link)
    assert not h.registry.registered()
    # each found gone at its second bounce, in the second round; the line a round after the first of them at most
    assert said_before[3 * _BEAT_TICKS + 1] == 1
    ((level, line),) = said(caplog)
    assert line.startswith("40 workers lost together (unreachable) holding 0 images: fleet-")


async def test_workers_found_gone_just_before_the_engine_stops_are_said_as_it_stops(tmp_path, monkeypatch, caplog):
    """Found gone within the round whose end says them, and the engine stopped before that end: their loss was said
    in no line."""
    caplog.set_level(logging.INFO)
    h = Harness()
    workers = fleet(h, 40)
    link = link_over(h, tmp_path)
    link._socket.send = lambda identity, frames: zmq.EHOSTUNREACH
    # the turn of the first beat that finds one gone (its second, a round after its first); the watch ends with it
    first_found = _BEAT_TICKS + min(hash(w.identity) % _BEAT_TICKS or _BEAT_TICKS for w in workers)
    await Ticks(monkeypatch, first_found).watch(link)
    lost = len(workers) - len(h.registry.registered())
    assert lost
    ((level, line),) = said(caplog)
    assert level == "WARNING"
    assert line.startswith(f"{lost} workers lost together (unreachable)" if lost > 1 else "worker fleet-")


async def test_a_worker_lost_while_none_is_found_gone_is_said_at_once(tmp_path, monkeypatch, caplog):
    """The round that gathers the workers found gone opens only when one is: a worker that exits meanwhile is said
    as it is lost, not a round later beside others."""
    caplog.set_level(logging.INFO)
    h = Harness()
    exits, _ = fleet(h, 2)
    link = link_over(h, tmp_path)
    said_before: dict[int, list] = {}

    def tick(now: int) -> None:
        said_before[now] = said(caplog)
        if now == _BEAT_TICKS + 5:
            h.dispatcher.worker_lost(exits, "exited")

    await Ticks(monkeypatch, 2 * _BEAT_TICKS, tick).watch(link)
    assert said_before[_BEAT_TICKS + 6] == [("WARNING", "worker fleet-0/00000000 lost (exited) holding 0 images")]


async def test_a_loss_that_fails_to_be_handled_leaves_the_others_lost_with_it_handled(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    h = Harness()
    workers = fleet(h, 3)
    link = link_over(h, tmp_path, interval_s=0.02, timeout_s=0.01)
    worker_lost = h.dispatcher.worker_lost

    def fails_for_the_first(worker, cause) -> None:
        if worker is workers[0]:
            raise RuntimeError("a bug")
        worker_lost(worker, cause)

    h.dispatcher.worker_lost = fails_for_the_first
    watch = asyncio.create_task(link.run())
    try:
        for worker in workers:
            worker.last_seen = 0.0
        assert await eventually(lambda: [w.name for w in h.registry.registered()] == [workers[0].name])
        assert "handling the loss of worker fleet-0/00000000 failed" in caplog.text
        assert not watch.done()
    finally:
        watch.cancel()
        link.close()


async def test_the_workers_told_to_stop_are_said_to_leave_as_the_engine_stops(tmp_path, caplog):
    """Told Shutdown, a worker was said to leave once the beats to it bounced, up to two heartbeats on, and the engine
    closes as soon as its own workers have exited: its last lines said both, one or neither of its two workers left,
    as the race went."""
    caplog.set_level(logging.INFO)
    h = Harness()
    fleet(h, 2)
    link = link_over(h, tmp_path)
    link.shutdown_all()
    link.close()
    assert said(caplog) == [("INFO", "2 workers left together: fleet-0/00000000, fleet-1/00000001")]
    assert h.metrics.registry.get_sample_value("argus_worker_losses_total", {"cause": "left"}) == 2
