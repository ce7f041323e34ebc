"""The dispatcher alone (no sockets, an injected clock) serving several clients (engine/dispatch/fair_share.py): a light
client's request is served beside a flooding client's backlog, the flood's jobs are the ones shed, and a lone
client's jobs keep the order of their deadlines."""

import itertools

import pytest
from dispatcher_harness import PROFILE, TWO_LEVELS, Harness, serve_in_turn, settle

from engine.dispatch.fair_share import fair_rank
from engine.dispatch.jobs import Fallback
from protocols.client_messages import Images


def sample(h: Harness, name: str) -> float:
    return h.metrics.registry.get_sample_value(name)


def served_in_order(h: Harness, worker, until) -> list[str]:
    """Finishes the worker's batches one by one, a second apart, until `until()`; the ids of the jobs sent."""
    sent = []
    while not until():
        batch = h.batches()[-1]
        sent += [item.request_id for item in batch.items]
        h.clock.now += 1
        h.finish(worker, batch)
        h.dispatcher.sweep()
    return sent


async def test_a_light_clients_request_is_served_beside_a_flooding_clients_backlog():
    """By deadline alone, twenty requests without slo_ms queued by one client (ranked as due one SLO after they
    came) went before a light client's request due in 5 s, which was answered deadline_exceeded."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=5.0)
    a = h.add_worker("a", max_batch=1)
    flood = [h.request(prompt="flood", client="flood") for _ in range(20)]
    light = h.request(slo_ms=5_000, prompt="light", client="light")
    flood += [h.request(prompt="flood", client="flood") for _ in range(5)]
    flood_ids = [r.jobs[0].job_id for r in flood]  # a request answered lets go of its jobs
    await settle()
    # what /metrics shows: two clients share the fleet, and the flood's backlog past its share was put back (the 24
    # queued less the few within its share; the light client's request, none)
    assert sample(h, "argus_sharing_clients") == 2
    assert 20 <= sample(h, "argus_fair_deferrals_total") < len(flood) - 1
    sent = served_in_order(h, a, lambda: all(r.done for r in [*flood, light]))
    await settle()
    assert isinstance(light.future.result(), Images)
    assert all(isinstance(r.future.result(), Images) for r in flood)  # without a deadline, never answered late
    assert [job_id for job_id in sent if job_id in flood_ids] == flood_ids  # the flood's own order is kept


async def test_a_flood_of_hits_sheds_its_own_jobs_not_a_light_clients_miss():
    """Moore-Hodgson sheds the costliest job kept before a late one: a flood's hits (half a miss's time) late behind
    a light client's miss shed the miss, and the light client was answered deadline_exceeded for the flood."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1, escalate=True)
    a = h.add_worker("a", max_batch=1)
    flood = [h.request(slo_ms=3_000, prompt="flood", level=25, k_star=25, client="flood") for _ in range(8)]
    light = h.request(slo_ms=3_000, prompt="light", client="light")  # a miss: 1 s
    h.dispatcher.sweep()
    await settle()
    served_in_order(h, a, lambda: all(r.done for r in [*flood, light]))
    await settle()
    assert isinstance(light.future.result(), Images)
    late = [r for r in flood if not isinstance(r.future.result(), Images)]
    assert late and all(r.future.result().code == "deadline_exceeded" for r in late)
    assert len(late) < len(flood)  # the flood is served beside it, as far as the fleet makes its deadlines


async def test_a_backlog_ranked_again_as_a_second_client_comes_leaves_no_work_behind_once_served():
    """Ranked again, a queued job is counted once, at its new place: counted at both, it left its time behind it
    once sent, for good, and a request that comes later, with a second to spare at its own level, was judged late
    behind that phantom and moved up to its neighbour's latent."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1, escalate=True, slo_s=2.0)
    a = h.add_worker("a", max_batch=1)
    first = [h.request(prompt="flood", client="flood"), h.request(prompt="flood", level=25, client="flood")]
    light = h.request(slo_ms=5_000, prompt="light", client="light")  # the second client: the flood's hit ranked again
    served_in_order(h, a, lambda: all(r.done for r in [*first, light]))
    h.request(slo_ms=10_000, client="light")  # the worker is busy for 1 s
    later = h.request(slo_ms=2_400, client="light", fallbacks=(Fallback(25, 25, "latent-25"),))
    assert later.jobs[0].level == 0 and h.metrics.escalated._value.get() == 0


async def test_a_backlog_ranked_again_puts_each_job_behind_its_clients_work_before_it_at_a_fair_share():
    """As a second client comes, each of the first's queued jobs ranks at its fair point: when the work its client
    queued before it would be done at half the fleet (each second of its work taking two): 0 s, 2 s and 4 s on,
    the first ranked by when it must start (1 s). The light request, to start by 3 s, goes between the second and
    third; with a second too many counted before them, the flood's second job went behind it too."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=2.0)
    a = h.add_worker("a", max_batch=1)
    flood = [h.request(prompt="flood", client="flood") for _ in range(4)]  # one runs, three queue
    light = h.request(slo_ms=4_000, prompt="light", client="light")
    ids = [r.jobs[0].job_id for r in [*flood, light]]  # a request answered lets go of its jobs
    sent = served_in_order(h, a, lambda: all(r.done for r in [*flood, light]))
    assert sent == [ids[0], ids[1], ids[2], ids[4], ids[3]]


async def test_a_client_counts_as_sharing_until_the_work_queued_when_it_came_is_done():
    """Past its SLO a flood counts as long as its backlog takes the fleet: on one worker, its 8 s queued behind its
    last request; a light client coming 7 s on shares the fleet with it, its request ranked beside the backlog."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=5.0)
    h.add_worker("a", max_batch=1)
    for _ in range(10):  # one runs, nine queue: 8 s of work before the last
        h.request(prompt="flood", client="flood")
    h.clock.now += 7
    h.request(slo_ms=5_000, prompt="light", client="light")
    assert sample(h, "argus_sharing_clients") == 2 and sample(h, "argus_fair_deferrals_total") > 0


@pytest.mark.parametrize("visited", [False, True], ids=["alone-from-the-start", "after-another-client-left"])
async def test_a_lone_clients_jobs_keep_the_order_of_their_deadlines(visited):
    """With no other client, there is no one to share with: a request with a near deadline goes before the ones
    queued earlier without one, as by deadline alone (ranked behind the client's own backlog, it would miss). So
    too once a client that shared the fleet has been gone longer than it counts for (one SLO, its work done)."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=5.0)
    a = h.add_worker("a", max_batch=1)
    if visited:
        for _ in range(2):  # the second request renews the time the visitor counts for
            visitor = h.request(prompt="visitor", client="visitor")
            h.clock.now += 1
            h.finish(a, h.batches()[-1])
            await settle()
            assert isinstance(visitor.future.result(), Images)
            h.clock.now += 3
        assert sample(h, "argus_sharing_clients") == 1  # still counted: its last request was routed 4 s ago
        h.clock.now += 10  # past the SLO it counts for
    patient = [h.request(prompt="patient", client="pipeline") for _ in range(10)]
    urgent = h.request(slo_ms=3_000, prompt="urgent", client="pipeline")
    urgent_id = urgent.jobs[0].job_id
    await settle()
    assert sample(h, "argus_sharing_clients") == 1 and sample(h, "argus_fair_deferrals_total") == 0
    sent = served_in_order(h, a, lambda: all(r.done for r in [*patient, urgent]))
    await settle()
    assert isinstance(urgent.future.result(), Images)
    assert sent.index(urgent_id) == 1  # next after the one running when it came


async def test_a_job_its_fair_point_made_late_sheds_its_own_clients_costlier_job():
    """Moore-Hodgson within the client (KeptJobs): a flood's hit put back by its fair point, late behind the flood's
    own miss (twice a hit's time), sheds that miss, and the flood's hits all make their deadlines. Shedding nothing
    of its client's, the flood had two hits answered deadline_exceeded to keep one miss."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1, escalate=True)
    a = h.add_worker("a", max_batch=1)
    light = h.request(slo_ms=3_000, prompt="light", client="light")  # a miss: the worker is busy for 1 s
    miss = h.request(slo_ms=4_000, prompt="flood miss", client="flood")
    hits = [h.request(slo_ms=2_500, prompt=f"flood hit {i}", level=25, k_star=25, client="flood") for i in range(3)]
    h.dispatcher.sweep()
    await settle()
    assert miss.future.result().code == "deadline_exceeded"
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "shed"}) == 1
    await serve_in_turn(h, a, [light, *hits])


@pytest.mark.parametrize("flood_hits_behind", [0, 2])
async def test_a_job_late_by_its_deadline_sheds_another_clients_costlier_job_while_clients_share(flood_hits_behind):
    """A job its own deadline ranks (not put back) sheds the costliest job of any client kept before it, as when one
    client alone uses the fleet: a light client's two hits late behind a flood's miss shed the miss and both make
    their deadlines (tests/test_dispatcher_deadlines.py has the lone client's case). With flood hits behind them,
    the miss, shed from the view of every client, is dropped from its own client's view when met there: a flood
    hit put back and late finds it first, and goes on to the flood's other jobs (the flood's late hit could shed
    the miss itself: without them, only the light hits can)."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1, escalate=True)
    a = h.add_worker("a", max_batch=1)
    busy = h.request(slo_ms=10_000, prompt="flood busy", client="flood")  # the worker is busy for 1 s
    miss = h.request(slo_ms=2_100, prompt="flood miss", client="flood")  # to start by 1.1 s: it goes first
    # behind it each would end late (2.5 s, 3 s); without it, at 1.5 s and 2 s
    hits = [h.request(slo_ms=slo_ms, level=25, k_star=25, prompt="light", client="light") for slo_ms in (2_000, 2_050)]
    # the first in time after the light hits (2.5 s), the second put back by its fair point, and late
    flood_hits = [
        h.request(slo_ms=2_500, level=25, k_star=25, prompt="flood", client="flood") for _ in range(flood_hits_behind)
    ]
    h.dispatcher.sweep()
    await settle()
    assert sample(h, "argus_sharing_clients") == 2
    assert miss.future.result().code == "deadline_exceeded"
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "shed"}) == 1
    await serve_in_turn(h, a, [busy, *hits, *flood_hits[:1]])
    assert all(r.future.result().code == "deadline_exceeded" for r in flood_hits[1:])


def test_a_job_ranks_by_its_start_by_time_when_no_other_client_shares_or_its_client_has_nothing_queued():
    """A fair point only ever puts a job back behind its own client's queued work while others share the fleet: a
    lone client's job with a backlog before it, and a sharing client's first job past the time it must start by
    (served late), rank by that time. Ranked at `now`, that late job would count as put back behind no one and
    shed only its own client's jobs."""
    assert fair_rank(start_by=5.0, now=10.0, queued_s=30.0, sharing=1, workers=2) == 5.0
    assert fair_rank(start_by=5.0, now=10.0, queued_s=0.0, sharing=3, workers=2) == 5.0
    assert fair_rank(start_by=5.0, now=10.0, queued_s=4.0, sharing=3, workers=2) == 16.0  # 10 + 4 s at 2 of 3 shares


async def test_an_image_whose_worker_is_lost_keeps_its_place_among_its_clients_images():
    """The flood's oldest image was running on the worker lost. Routed again, it was ranked as if just queued, at
    its client's fair point behind all the client's backlog: served last, after images it had come before (with
    deadlines, the oldest of the flood was the one answered late). It keeps the place it had."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=5.0)
    a, b = h.add_worker("a", max_batch=1), h.add_worker("b", max_batch=1)
    flood = []
    for _ in range(8):  # two run, one on each worker, and six queue
        flood.append(h.request(prompt="flood", client="flood"))
        h.clock.now += 0.01
    light = h.request(slo_ms=30_000, prompt="light", client="light")  # a second client: they share the fleet
    ids = [r.jobs[0].job_id for r in flood]  # a request answered lets go of its jobs
    assert flood[0].jobs[0].batch_id in a.inflight
    h.dispatcher.worker_lost(a, "crashed")
    sent = served_in_order(h, b, lambda: all(r.done for r in [*flood, light]))
    assert [job_id for job_id in sent if job_id in ids] == [ids[1], ids[0], *ids[2:]]


async def test_images_routed_again_as_the_last_but_one_client_stops_sharing_are_served():
    """A worker lost once the light client's time had passed: the first image routed again made the backlog be ranked
    anew (the flood alone shares the fleet now), and it was among the ranked, already named on its new worker and
    still in the order from its lost worker's queue, but counted nowhere: a KeyError that ended the engine
    (`argus bench chaos`, 2026-12-07)."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=1.0)
    a, b = h.add_worker("a", max_batch=1), h.add_worker("b", max_batch=1)
    light = h.request(prompt="light", client="light")
    flood = [h.request(prompt="flood", client="flood") for _ in range(5)]  # one runs on each worker, four queue
    assert sample(h, "argus_sharing_clients") == 2 and b.queue
    h.clock.now += 3  # past the light client's time (one SLO): the flood alone shares the fleet
    h.dispatcher.worker_lost(b, "exited")
    assert sample(h, "argus_sharing_clients") == 1
    while not all(r.done for r in [light, *flood]):
        h.clock.now += 1
        h.finish(a, h.batches("a")[-1])
    await settle()
    assert all(isinstance(r.future.result(), Images) for r in [light, *flood])


async def test_a_client_counts_as_sharing_the_fleet_while_all_the_workers_clear_its_backlog():
    """A backlog of 3 s on two workers clears in 1.5 s: its client stops counting then, not after the 3 s one worker
    alone would take, as if it still shared a fleet it had left (its jobs taken as they would be: one still queued
    counts its client)."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=1.0)
    workers = h.add_worker("a", max_batch=1), h.add_worker("b", max_batch=1)
    for _ in range(6):  # two run, four queue
        h.request(client="pipeline")
    assert sample(h, "argus_sharing_clients") == 1
    for _ in range(2):  # each worker takes one more at 1 s and the last at 2 s: none is queued
        h.clock.now += 1.0
        for worker in workers:
            h.finish(worker, h.batches(worker.name)[-1])
    assert sample(h, "argus_sharing_clients") == 0


async def test_a_client_counts_as_sharing_while_its_request_is_queued():
    """A light client's request due in 6 s ranks by the time it must start by (5 s on), later than the queue it came
    to would be done: it stopped counting then, with its request still queued, and the flood, alone again, had its
    next jobs ranked as due one SLO after they came, before that request, which was answered deadline_exceeded at its
    turn (docs/reliability.md). Counted while it waits, the flood's jobs rank by its fair point, and it is served."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=1.0)
    a = h.add_worker("a", max_batch=1)
    flood = [h.request(prompt="flood", client="flood") for _ in range(4)]  # one runs, three queue
    light = h.request(slo_ms=6_000, prompt="light", client="light")
    waiting = light.jobs[0]
    while not light.done:
        h.clock.now += 1
        h.finish(a, h.batches()[-1])
        await settle()
        flood.append(h.request(prompt="flood", client="flood"))  # one answered, one more sent
        assert waiting.batch_id is not None or sample(h, "argus_sharing_clients") == 2  # counted until it is sent
        h.dispatcher.sweep()
        await settle()
    assert isinstance(light.future.result(), Images)


async def test_a_lone_clients_backlog_is_ranked_again_once_as_a_second_client_comes_not_at_each_job(monkeypatch):
    """A pass over the queue as each job is routed (O(n) a job) cost a lone client's deep backlog its throughput,
    for no change of order: it shares the fleet with no one."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=5.0)
    h.add_worker("a", max_batch=1)
    passes = []
    rerank = h.dispatcher._timing.rerank
    monkeypatch.setattr(h.dispatcher._timing, "rerank", lambda queued, now: passes.append(now) or rerank(queued, now))
    for _ in range(20):
        h.request(prompt="flood", client="flood")
    assert not passes
    h.request(slo_ms=5_000, prompt="light", client="light")
    h.request(prompt="flood", client="flood")
    assert len(passes) == 1


async def serve_for(h: Harness, worker, seconds: int, each_second=lambda second: None) -> list[str]:
    """Finishes the worker's batches of one image one a second (as long as PROFILE says: the pace stays the
    profile's) for `seconds`, calling `each_second(second)` after each and sweeping; the ids of the jobs sent, in
    order."""
    sent = []
    for second in range(seconds):
        batch = h.batches()[-1]
        sent += [item.request_id for item in batch.items]
        h.clock.now += 1
        h.finish(worker, batch, run_ms=1000)
        await settle()
        each_second(second)
        h.dispatcher.sweep()
        await settle()
    return sent


async def test_a_flood_served_beyond_its_share_keeps_the_order_it_sent_its_jobs_in():
    """A flood sending five at a time beside a light client sending little: it is served beyond its share, and
    reckoned from now behind the seconds it had queued, its later jobs ranked before its own earlier ones (in the
    order sent: ..., 23, 25, 24, 26, 27, 30, 31, 32, 33, 34, 28, 35, 29). Behind its last job queued, they keep the
    order sent."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=5.0)
    a = h.add_worker("a", max_batch=1)
    flood = []

    def send(second):
        if second % 5 == 4:
            flood.extend(h.request(prompt="flood", client="flood").jobs[0].job_id for _ in range(5))
        if second % 10 == 9:
            h.request(slo_ms=5_000, prompt="light", client="light")

    send(-1)
    sent = await serve_for(h, a, 40, send)
    assert sample(h, "argus_sharing_clients") == 2
    served = [job_id for job_id in sent if job_id in flood]
    assert len(served) > 30 and served == flood[: len(served)]


def flood_beside_a_light_client(h: Harness, flood: list[str]):
    """For serve_for: one request a second, the flood's (its job's id noted in `flood`) or every fourth a light
    client's, due in 5 s, counted on across calls: the queue stays as long, the light client counts as sharing the
    fleet for good, and the flood is served beyond its share."""
    seconds = itertools.count()

    def send(_):
        if next(seconds) % 4 == 0:
            h.request(slo_ms=5_000, prompt="light", client="light")
        else:
            flood.append(h.request(prompt="flood", client="flood").jobs[0].job_id)

    return send


async def test_a_client_back_after_a_long_silence_does_not_go_before_a_floods_whole_backlog():
    """A flood keeping 30 queued, served beyond its share beside a light client for 80 s: reckoned when queued, its
    backlog's fair points lay as far ahead as half the fleet would take for it, and a client back after that
    silence had its whole burst of 10 served before the flood's next job. From the fair point of the job that led the
    batch sent last, the burst's jobs go among the flood's."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=5.0)
    a = h.add_worker("a", max_batch=1)
    h.request(prompt="quiet", client="quiet")
    flood = [h.request(prompt="flood", client="flood").jobs[0].job_id for _ in range(30)]
    flood_on = flood_beside_a_light_client(h, flood)
    await serve_for(h, a, 80, flood_on)
    burst = {h.request(prompt="quiet", client="quiet").jobs[0].job_id for _ in range(10)}
    sent = (await serve_for(h, a, 11, flood_on))[1:]  # the first was sent before the burst came
    assert sum(job_id in burst for job_id in sent) >= 3
    assert sum(job_id in flood for job_id in sent) >= 3


async def test_a_clients_next_jobs_go_behind_its_backlog_once_it_has_the_fleet_alone_again():
    """A light client stopped counting: the flood had the fleet alone, and its next jobs ranked by their deadlines
    (due one SLO after they came) before its backlog, still at the fair points it had beside the light client. Its
    backlog is ranked by deadline again then, and the flood keeps the order it sent its jobs in."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=5.0)
    a = h.add_worker("a", max_batch=1)
    light = h.request(slo_ms=5_000, prompt="light", client="light")
    flood = [h.request(prompt="flood", client="flood").jobs[0].job_id for _ in range(12)]

    def flood_on(second):
        if second >= 6:  # the light client was served at 1 s, and counts for an SLO after
            flood.append(h.request(prompt="flood", client="flood").jobs[0].job_id)

    sent = await serve_for(h, a, 14, flood_on)
    assert isinstance(light.future.result(), Images) and sample(h, "argus_sharing_clients") == 1
    assert [job_id for job_id in sent if job_id in flood] == flood[: len(sent) - 1]


async def test_a_job_put_back_counts_as_deferred_once_however_often_the_queue_is_ranked_again(monkeypatch):
    """The fair points of a flood served beyond its share run ahead of now, and the queue is ranked again from now
    (engine/dispatch/fair_share.py FairClock): a job put back before and after counts once in
    argus_fair_deferrals_total."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=5.0)
    a = h.add_worker("a", max_batch=1)
    passes = []
    rerank = h.dispatcher._timing.rerank
    monkeypatch.setattr(h.dispatcher._timing, "rerank", lambda queued, now: passes.append(now) or rerank(queued, now))
    flood = [h.request(prompt="flood", client="flood").jobs[0].job_id for _ in range(10)]
    await serve_for(h, a, 120, flood_beside_a_light_client(h, flood))
    assert len(passes) > 2  # the second client came, and the fair clock ran ahead since
    assert sample(h, "argus_fair_deferrals_total") <= len(flood)


async def test_a_light_request_coming_as_the_fair_clock_is_moved_back_goes_before_the_floods_backlog(monkeypatch):
    """The fair clock run ahead, a flood served beyond its share, is moved back to an SLO (or the time the queue takes
    to clear) ahead of now, not to now: reckoned from now, the flood's oldest queued job ranked by the time it must
    start by, long past, and its next ones within the SLO, before a light client's request that came then."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=5.0)
    a = h.add_worker("a", max_batch=1)
    passes = []
    rerank = h.dispatcher._timing.rerank
    monkeypatch.setattr(h.dispatcher._timing, "rerank", lambda queued, now: passes.append(now) or rerank(queued, now))
    flood_on = flood_beside_a_light_client(
        h, [h.request(prompt="flood", client="flood").jobs[0].job_id for _ in range(10)]
    )
    for _ in range(100):  # the second client came, then the fair clock ran ahead (about 40 s on)
        if len(passes) == 2:
            break
        await serve_for(h, a, 1, flood_on)
    assert len(passes) == 2
    other = h.request(slo_ms=5_000, prompt="other", client="other").jobs[0].job_id
    assert (await serve_for(h, a, 2, flood_on))[1] == other


async def test_a_request_due_far_ahead_waits_behind_a_floods_backlog_however_long_it_was_served_beyond_its_share():
    """The fair clock is held to an SLO (or the time the queue takes to clear) ahead of now: let run, a flood
    served beyond its share for minutes had its fair points minutes ahead, and a request due in a minute went before
    its whole backlog, due in seconds."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=5.0)
    a = h.add_worker("a", max_batch=1)
    flood = [h.request(prompt="flood", client="flood").jobs[0].job_id for _ in range(10)]
    flood_on = flood_beside_a_light_client(h, flood)
    await serve_for(h, a, 200, flood_on)
    patient = h.request(slo_ms=60_000, prompt="patient", client="patient").jobs[0].job_id
    sent = await serve_for(h, a, 5, flood_on)
    assert patient not in sent and sum(job_id in flood for job_id in sent) >= 3
