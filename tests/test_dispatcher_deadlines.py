"""The dispatcher alone (no sockets, an injected clock) against deadlines: answered at once when missed, moved up a
level or shed to make them, served late when told to, batches and queues ordered by them."""

import pytest
from dispatcher_harness import LADDER, PROFILE, SIX_LEVELS, THREE_LEVELS, TWO_LEVELS, Harness, serve_in_turn, settle

from controller.profiles import LatencyProfile
from engine.dispatch.dispatcher import PIPELINE_HORIZON_S
from engine.dispatch.jobs import Fallback
from engine.dispatch.timing import BATCH_MARGIN
from protocols.client_messages import Error, Images
from protocols.worker_messages import Abort


@pytest.mark.parametrize("spare, sizes", [(BATCH_MARGIN / 2, [1]), (BATCH_MARGIN * 2, [2])], ids=["short", "enough"])
async def test_a_batch_of_several_leaves_a_margin_before_its_tightest_deadline(spare, sizes):
    """Two images that fit in one batch only to within less than BATCH_MARGIN of its time do not go as one: the
    engine's own time past the run made such batches end late, every image at once."""
    h = Harness(profile=LatencyProfile("t", 50, {0: (1.0, 1.5)}, "a batch of 2 takes 1.5 s"))
    h.add_worker("a", max_batch=2)
    h.request(n=2, slo_ms=1500 * (1 + spare))
    assert [len(batch.items) for batch in h.batches()] == sizes


@pytest.mark.parametrize("slo_ms", [100, 1_000], ids=["passed", "due now"])
async def test_deadline_passed_in_queue_is_answered_not_dropped(slo_ms):
    """No profile, no prediction: a request still queued when its deadline comes, or after, can no longer be served in
    time."""
    h = Harness(inflight_batches_per_worker=1)
    h.add_worker("a", max_batch=1)
    h.request()
    late = h.request(slo_ms=slo_ms)
    h.clock.now += 1
    h.dispatcher.sweep()
    await settle()
    reply = late.future.result()
    assert isinstance(reply, Error) and reply.code == "deadline_exceeded"
    assert len(h.batches()) == 1


async def test_a_job_that_cannot_meet_its_deadline_is_answered_at_once():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=2)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # runs now: the worker is busy for 1 s
    doomed = h.request(slo_ms=1_500)  # would start after 1 s and need 1 s more
    await settle()
    assert doomed.future.result().code == "deadline_exceeded"
    assert len(h.batches()) == 1


async def test_deadlines_missed_are_counted_by_where_the_request_was_and_running_images_are_shown():
    """deadline_exceeded came from four places, and /metrics could not tell them apart."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=2)
    lonely = h.request(slo_ms=500)  # no worker yet
    h.clock.now += 1
    h.dispatcher.sweep()
    a = h.add_worker("a", max_batch=2)
    running = h.request(n=2, slo_ms=2_500)  # runs now: 2 s for the batch of 2
    assert h.metrics.registry.get_sample_value("argus_running_images") == 2
    predicted = h.request(slo_ms=2_500)  # would start after 2 s and need 1 s more
    h.clock.now += 3
    h.dispatcher.sweep()
    await settle()
    assert {r.future.result().code for r in (lonely, running, predicted)} == {"deadline_exceeded"}
    counted = {
        cause: h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": cause})
        for cause in ("no_worker", "running", "predicted")
    }
    assert counted == {"no_worker": 1, "running": 1, "predicted": 1}  # the request of 2 images counted once
    assert a.inflight and h.metrics.registry.get_sample_value("argus_running_images") == 2  # aborted, not answered


async def test_a_job_too_slow_at_its_level_moves_up_to_its_fallback():
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=3, escalate=True)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # the worker is busy for 1 s
    # 1.6 s left: at level 0 it would end after 2 s, from its neighbour's level 25 after 1.5 s
    moved = h.request(slo_ms=1_600, fallbacks=(Fallback(25, 25, "latent-25"),))
    # 1.4 s left is too little even at level 25 (1.5 s)
    stuck = h.request(slo_ms=1_400, fallbacks=(Fallback(25, 25, "latent-25"),))
    await settle()
    assert not moved.done and stuck.future.result().code == "deadline_exceeded"
    assert len(h.batches()) == 1  # it waits for the worker to finish, not behind its batch
    h.finish(a, h.batches()[0])
    sent = h.batches()[1]
    assert (sent.level, sent.items[0].latent, sent.items[0].request_id) == (25, "latent-25", moved.jobs[0].job_id)
    assert h.metrics.escalated._value.get() == 1


async def test_a_costly_job_is_shed_so_that_two_cheaper_ones_behind_it_meet_their_deadlines():
    """A miss (all its steps) queued first used to keep its place while the hits behind it, half its time each,
    were answered deadline_exceeded: one image in time instead of two."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=2, escalate=True)
    a = h.add_worker("a", max_batch=1)
    busy = h.request(slo_ms=10_000)  # the worker is busy for 1 s
    miss = h.request(slo_ms=2_100)  # must start within 1.1 s: it goes first, and would end at 2 s
    # behind it each would end late (2.5 s, 3 s); without it, at 1.5 s and 2 s
    hits = [h.request(slo_ms=slo_ms, level=25, k_star=25) for slo_ms in (2_000, 2_050)]
    h.dispatcher.sweep()
    await settle()
    assert miss.future.result().code == "deadline_exceeded"
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "shed"}) == 1
    await serve_in_turn(h, a, [busy, *hits])


async def test_a_job_shed_leaves_its_time_once_so_a_later_late_job_still_sheds():
    """A miss shed for a hit behind it takes its second off the work before the jobs behind once: taken off twice
    (as shed, and again as its request's images dropped), the two hits late behind a second miss were judged to
    end a second early, and the second miss was shed only at a later sweep, answered later than it could have
    been."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=2, escalate=True)
    a = h.add_worker("a", max_batch=1)
    busy = h.request(slo_ms=10_000)  # the worker is busy for 1 s
    first_miss = h.request(slo_ms=2_100, prompt="miss")  # must start within 1.1 s: it goes first
    first_hit = h.request(slo_ms=2_000, level=25, k_star=25, prompt="hit")  # would end at 2.5 s behind it: sheds it
    second_miss = h.request(slo_ms=3_000, prompt="miss")  # ends at 2.5 s behind the first hit
    # behind it they would end at 3 s and 3.5 s, late; without it at 2 s and 2.5 s
    hits = [h.request(slo_ms=slo_ms, level=25, k_star=25, prompt="hit") for slo_ms in (2_900, 3_000)]
    h.dispatcher.sweep()
    await settle()
    assert first_miss.future.result().code == "deadline_exceeded"
    assert second_miss.future.result().code == "deadline_exceeded"
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "shed"}) == 2
    await serve_in_turn(h, a, [busy, first_hit, *hits])


async def test_the_other_images_of_a_request_shed_are_not_held_against_the_jobs_behind_them():
    """A request of two misses shed for a hit behind it still weighed on the jobs behind with its other miss, which
    no worker would ever run: a miss that made its deadline was shed too, for a hit that made its own without it."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=2, escalate=True)
    a = h.add_worker("a", max_batch=1)
    busy = h.request(slo_ms=10_000)  # the worker is busy for 1 s
    pair = h.request(n=2, slo_ms=3_000, prompt="pair")  # two misses, each to start by 2 s: the second ends at 3 s
    first_hit = h.request(slo_ms=3_000, level=25, k_star=25, prompt="hit")  # behind the pair it would end at 3.5 s
    miss = h.request(slo_ms=4_000, prompt="miss")  # ends at 2.5 s behind the hit
    second_hit = h.request(slo_ms=3_800, level=25, k_star=25, prompt="hit")  # ends at 3 s behind the miss
    h.dispatcher.sweep()
    await settle()
    assert pair.future.result().code == "deadline_exceeded"
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "shed"}) == 1
    await serve_in_turn(h, a, [busy, first_hit, miss, second_hit])


async def test_the_other_images_of_a_request_shed_are_not_shed_again_for_a_job_behind_them():
    """The other image of a request shed, taken off the work before the jobs behind it, stays off: left in the
    heap a later late job sheds from, it was shed a second time (its request already answered), taking its 1.5 s
    off the work again. The late hit then counted itself in time and kept the miss before it: the miss was shed
    only at a later sweep, and answered later than it could have been."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1, escalate=True)
    a = h.add_worker("a", max_batch=1)
    busy = h.request(slo_ms=10_000)  # the worker is busy for 1 s
    pair = h.request(n=2, slo_ms=3_900, steps=75, prompt="pair")  # 1.5 s each, to start by 2.4 s
    first_hit = h.request(slo_ms=3_000, level=25, k_star=25, prompt="hit")  # would end at 4.5 s behind the pair
    miss = h.request(slo_ms=3_600, prompt="miss")  # ends at 2.5 s behind the first hit
    # behind the miss they would end at 3 s, 3.5 s and 4 s; without it, at 2 s, 2.5 s and 3 s
    hits = [h.request(slo_ms=3_200, level=25, k_star=25, prompt="hit") for _ in range(3)]
    h.dispatcher.sweep()
    await settle()
    assert pair.future.result().code == "deadline_exceeded"
    assert miss.future.result().code == "deadline_exceeded"
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "shed"}) == 2
    await serve_in_turn(h, a, [busy, first_hit, *hits])


async def test_an_image_that_shed_its_own_request_sheds_no_other():
    """An image late behind the costlier images of its own request shed one of them, answering its own request, and
    went on shedding others' images, for a request already answered: each such request was answered
    deadline_exceeded for nothing."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=2, slo_s=4.2)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # the worker is busy for 1 s
    first = h.request(slo_ms=2_200, prompt="first")  # a miss to start by 1.2 s: it goes first, and ends at 2 s
    pair = h.request(n=2, slo_ms=4_000, level=25, k_star=25, prompt="pair")  # its miss starts by 3 s, its hit by 3.5 s
    for prompt in ("patient", "patient too"):  # no deadline: ranked as due at 4.2 s, so between the pair's images
        h.request(prompt=prompt)
    h.dispatcher.sweep()  # the pair's hit would end at 5.5 s: it sheds its own miss, and can end at 4.5 s at best
    await settle()
    assert pair.future.result().code == "deadline_exceeded"
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "shed"}) == 1
    assert not first.done
    h.clock.now += 1
    h.finish(a, h.batches()[-1])
    assert h.batches()[-1].items[0].request_id == first.jobs[0].job_id


async def test_a_request_without_a_deadline_is_never_shed():
    """A request sent without slo_ms is never answered deadline_exceeded (docs/architecture.md): a pipeline's miss
    queued before two hits with deadlines was answered 504 deadline_exceeded, shed so that the hits made theirs."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=2, escalate=True, slo_s=2.1)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # the worker is busy for 1 s
    patient = h.request(prompt="patient")  # no deadline: ranked as due at 2.1 s, so it goes first
    hits = [h.request(slo_ms=slo_ms, level=25, k_star=25) for slo_ms in (2_000, 2_050)]  # late behind it
    h.dispatcher.sweep()
    await settle()
    assert not patient.done
    (patient_job,) = patient.jobs
    h.clock.now += 1
    h.finish(a, h.batches()[-1])
    assert h.batches()[-1].items[0].request_id == patient_job.job_id
    h.clock.now += 1
    h.finish(a, h.batches()[-1])
    await settle()
    assert isinstance(patient.future.result(), Images)
    assert [hit.future.result().code for hit in hits] == ["deadline_exceeded"] * 2  # late behind it, each answered
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "shed"}) == 0


async def test_a_job_is_not_shed_for_one_that_costs_as_much():
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=2, escalate=True)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # the worker is busy for 1 s
    first = h.request(slo_ms=2_100)
    second = h.request(slo_ms=2_200)  # behind the first it would end at 3 s: shedding the first saves nothing
    h.dispatcher.sweep()
    await settle()
    assert not first.done and not second.done
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "shed"}) == 0


async def test_baselines_never_move_a_job_up():
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=2)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)
    doomed = h.request(slo_ms=1_600, fallbacks=(Fallback(25, 25, "latent-25"),))
    await settle()
    assert doomed.future.result().code == "deadline_exceeded"


async def test_late_jobs_are_served_when_the_engine_is_told_to():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=2, serve_late=True)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)
    late = h.request(slo_ms=1_500)
    await settle()
    assert len(h.batches()) == 1 and not late.done
    h.finish(a, h.batches()[0])
    assert len(h.batches()) == 2 and h.batches()[1].items[0].request_id == late.jobs[0].job_id


async def test_a_request_whose_deadline_passes_while_it_waits_is_served_late_when_told_to():
    """Before, --serve-late served late only what was already running: one queued, or waiting for a worker, past
    its deadline was answered deadline_exceeded all the same."""
    h = Harness(profile=PROFILE, serve_late=True)
    queued, waiting = h.request(slo_ms=10_000), h.request(slo_ms=1_000)  # no worker yet
    h.clock.now += 2
    h.dispatcher.sweep()
    a = h.add_worker("a", max_batch=1)
    later = h.request(slo_ms=1_000)  # queued behind the two
    h.clock.now += 2
    h.dispatcher.sweep()
    await settle()
    assert not any(request.done for request in (queued, waiting, later))
    for _ in range(3):
        h.finish(a, h.batches()[-1])
    await settle()
    assert all(isinstance(request.future.result(), Images) for request in (queued, waiting, later))


async def test_requests_served_late_leave_in_whole_batches():
    """Before, each job that could not meet its deadline went alone: a fleet serving late ran at batch 1."""
    h = Harness(profile=PROFILE, serve_late=True)
    a = h.add_worker("a", max_batch=4)
    h.request()  # runs for 1 s
    late = [h.request(slo_ms=500) for _ in range(8)]
    h.finish(a, h.batches()[0])
    h.finish(a, h.batches()[1])
    await settle()
    assert [len(batch.items) for batch in h.batches()] == [1, 4, 4]
    assert sum(request.done for request in late) == 4


async def test_a_request_served_late_when_told_to_still_runs_alone_while_alone_it_is_in_time():
    """Whole batches are for the jobs that are late anyway: a job that makes its deadline only alone still goes
    alone when the engine serves late, not four at once, late."""
    h = Harness(profile=PROFILE, serve_late=True)
    a = h.add_worker("a", max_batch=4)
    h.request()  # runs for 1 s
    for _ in range(4):
        h.request(slo_ms=2_500)  # 1.5 s left once the worker frees: one image (1 s) fits, two (2 s) do not
    h.clock.now += 1
    h.finish(a, h.batches()[0])
    assert [len(batch.items) for batch in h.batches()] == [1, 1]


async def test_a_request_whose_deadline_passes_while_its_image_runs_is_answered_then():
    """A worker slower than its profile (or hung): before, the request waited for its answer, however late."""
    h = Harness(profile=PROFILE)
    a = h.add_worker("a", max_batch=1)
    late = h.request(slo_ms=1_500)  # sent at once: 1 s by the profile
    (batch,) = h.batches()
    h.clock.now += 1.2
    h.dispatcher.sweep()
    assert not late.done  # late by the profile, not by its deadline: the answer may still come in time
    h.clock.now += 0.3
    h.dispatcher.sweep()
    await settle()
    assert late.future.result().code == "deadline_exceeded"
    assert any(isinstance(m, Abort) and m.request_ids == [batch.items[0].request_id] for _, m in h.sent)
    h.finish(a, batch)  # its late answer is ignored
    assert h.dispatcher.outstanding_images == 0 and not a.inflight


async def test_a_deadline_missed_waiting_for_a_worker_after_a_loss_is_counted_as_such():
    """Before, an image sent once was counted (and its client told) late while running, wherever it waited."""
    h = Harness(profile=PROFILE)
    a = h.add_worker("a", max_batch=1)
    request = h.request(slo_ms=1_500)
    h.dispatcher.worker_lost(a, "exited")  # its image waits for a worker now
    h.clock.now += 2
    h.dispatcher.sweep()
    await settle()
    assert "waited for a worker" in request.future.result().message
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "no_worker"}) == 1
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "running"}) == 0


async def test_a_request_whose_deadline_passes_while_its_image_runs_is_served_late_when_told_to():
    h = Harness(profile=PROFILE, serve_late=True)
    a = h.add_worker("a", max_batch=1)
    late = h.request(slo_ms=1_500)
    h.clock.now += 2
    h.dispatcher.sweep()
    assert not late.done
    h.finish(a, h.batches()[0])
    assert isinstance(late.future.result(), Images)


# 2.5 s left: a batch of 2 (2 s) fits, a batch of 3 (3 s) does not; 3.5 s left: 3 fits, 4 (4 s) does not
@pytest.mark.parametrize("slo_ms, fits", [(2_500, 2), (3_500, 3)])
async def test_batches_stop_at_the_size_the_head_deadline_allows(slo_ms, fits):
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=4)
    h.request()  # occupies the worker while the rest queue
    for _ in range(4):
        h.request(slo_ms=slo_ms)
    h.finish(a, h.batches()[0])
    assert [len(b.items) for b in h.batches()] == [1, fits]


async def test_a_late_job_moves_up_only_as_far_as_its_deadline_needs():
    h = Harness(profile=THREE_LEVELS, inflight_batches_per_worker=1, escalate=True)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy for 1 s
    near = h.request(slo_ms=1_900, fallbacks=LADDER)  # 0.9 s after the wait: level 10 (0.8 s) will do
    far = h.request(slo_ms=1_600, fallbacks=LADDER)  # 0.6 s: only level 25 (0.5 s)
    assert [job.level for job in near.jobs + far.jobs] == [10, 25]
    assert far.jobs[0].fallbacks == () and near.jobs[0].fallbacks == (LADDER[1],)
    assert h.metrics.escalated._value.get() == 2
    h.finish(a, h.batches()[0])
    assert (h.batches()[-1].level, h.batches()[-1].items[0].latent) == (10, "latent-10")


async def test_an_image_moved_up_twice_is_counted_once():
    fast_top = LatencyProfile("test", 50, {0: (1.0, 2.0), 10: (0.8, 1.6), 25: (0.2, 0.4)}, "made up for the test")
    h = Harness(profile=fast_top, inflight_batches_per_worker=1, escalate=True)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy for 1 s
    moved = h.request(slo_ms=1_950, fallbacks=LADDER)  # 0.95 s after the wait: level 10 (0.8 s) makes it
    assert moved.jobs[0].level == 10 and h.metrics.escalated._value.get() == 1
    h.request(slo_ms=1_300, level=25)  # must start sooner: 0.2 s of work goes before the moved one
    h.dispatcher.sweep()  # 0.75 s left behind it: up again, to level 25
    assert moved.jobs[0].level == 25 and not moved.done
    assert h.metrics.escalated._value.get() == 1


async def test_a_job_moved_up_while_queued_counts_at_its_new_level_for_the_jobs_behind_it():
    """A queued job moved up a level in a sweep takes half the time: counted still at its old level, a request
    behind it that makes its deadline at its own level was judged late and moved up too, from a latent further from
    its prompt than it needed (fewer of its own steps)."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1, escalate=True)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy for 1 s
    fallbacks = (Fallback(25, 25, "latent-25"),)
    moved = h.request(slo_ms=2_400, fallbacks=fallbacks)  # at level 0 after the wait, it ends at 2 s: in time
    h.request(slo_ms=1_600, level=25, k_star=25)  # must start sooner: 0.5 s of work goes before the first one
    h.dispatcher.sweep()  # behind it, 0.9 s left: up to level 25 (0.5 s)
    assert moved.jobs[0].level == 25
    behind = h.request(slo_ms=3_200, fallbacks=fallbacks)  # after 1 s of work, at level 0 it ends at 3 s: in time
    assert behind.jobs[0].level == 0 and not behind.done
    assert h.metrics.escalated._value.get() == 1


async def test_an_upgrade_below_k_star_is_kept_only_on_a_free_worker():
    h = Harness(profile=THREE_LEVELS, inflight_batches_per_worker=1, escalate=True)
    h.add_worker("a", max_batch=1)
    upgraded = h.request(slo_ms=10_000, fallbacks=LADDER, k_star=10)  # the worker is free: exact, as planned
    waiting = h.request(slo_ms=10_000, fallbacks=LADDER, k_star=10)  # it must queue: back to its K*
    assert h.batches()[0].level == 0 and upgraded.jobs[0].level == 0
    assert waiting.jobs[0].level == 10 and waiting.jobs[0].latent == "latent-10"
    assert h.metrics.escalated._value.get() == 0  # not late: held at its own level


async def test_only_a_requests_first_image_moves_up_to_its_neighbours_latent():
    """A latent starts one image: the others of the request run in full from their own seeds. Both moved up to
    latent-10, they were one picture twice over (the scheduler steps on from a latent without noise of the seed's)."""
    h = Harness(profile=THREE_LEVELS, inflight_batches_per_worker=1, escalate=True)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy
    waiting = h.request(n=2, slo_ms=10_000, fallbacks=LADDER, k_star=10)  # it must queue: back to its K*
    first, second = waiting.jobs
    assert (first.level, first.latent) == (10, "latent-10")
    assert (second.level, second.start, second.latent, second.fallbacks, second.k_star) == (0, 0, None, (), 0)


async def test_a_request_of_other_steps_goes_back_to_its_k_star_by_level_not_by_step():
    """20 steps: its neighbour's steps 5 and 10 are levels 15 and 25 by share (controller/level_shares.py). Served
    exactly as planned but made to queue, it goes back to K* = 15, from step 5; compared by step (5 < 15, 10 <= 15),
    it went up to step 10, half its run, past its K*."""
    h = Harness(profile=SIX_LEVELS, inflight_batches_per_worker=1, escalate=True)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy
    ladder = (Fallback(15, 5, "latent-5"), Fallback(25, 10, "latent-10"))
    waiting = h.request(slo_ms=10_000, steps=20, fallbacks=ladder, k_star=15)
    job = waiting.jobs[0]
    assert (job.level, job.start, job.latent, job.fallbacks) == (15, 5, "latent-5", ladder[1:])
    h.finish(a, h.batches()[0])
    assert (h.batches()[-1].level, h.batches()[-1].steps) == (5, 20)  # sent from the step, timed from it


async def test_a_freed_worker_serves_the_job_that_must_start_soonest():
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy for 1 s
    hit = h.request(slo_ms=3_000, level=25)  # must start within 2.5 s
    h.clock.now += 0.2
    miss = h.request(slo_ms=3_000, level=0)  # came later, but must start within 2 s: it goes first
    h.finish(a, h.batches()[0])
    assert h.batches()[-1].items[0].request_id == miss.jobs[0].job_id
    h.finish(a, h.batches()[-1])
    assert h.batches()[-1].items[0].request_id == hit.jobs[0].job_id


async def test_a_job_that_must_queue_waits_on_the_worker_free_first():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1)
    a, b = h.add_worker("a"), h.add_worker("b")
    h.request()  # a: busy until 1001.0
    h.clock.now += 0.5
    h.request()  # b: busy until 1001.5
    first = h.request()  # both busy: it queues on a, free first
    second = h.request()  # a has one queued already (free at 1002.0): b is next free
    assert first.jobs[0].worker is a and second.jobs[0].worker is b


async def test_a_job_is_judged_by_the_worker_that_frees_first_not_the_one_it_queued_on():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1)
    a, b = h.add_worker("a", max_batch=1), h.add_worker("b", max_batch=1)
    h.request()  # a: busy until 1001.0
    h.clock.now += 0.9
    h.request()  # b: busy until 1001.9
    h.request()  # no deadline: queued, goes after the urgent one
    urgent = h.request(slo_ms=1500)  # due at 1002.4: 1.0 s of work once a frees
    assert urgent.jobs[0].worker is b and not urgent.done
    h.clock.now = a.busy_until
    h.finish(a, h.batches("a")[0])
    assert h.batches("a")[-1].items[0].request_id == urgent.jobs[0].job_id  # a takes it, in time


async def test_a_job_late_behind_the_jobs_queued_before_it_moves_up_as_it_is_queued():
    """Late only behind the queue (the wait alone leaves it time at its level), a job moves up as it is queued, not
    at the next sweep: it takes its faster level's place in the order from the start, and the jobs judged behind it
    in the meantime count its faster time."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1, escalate=True)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # the worker is busy for 1 s
    h.request(slo_ms=2_000)  # to start by 1 s: it goes first, and ends at 2 s
    # at level 0 it would end at 3 s, 0.2 s late; from its neighbour's level 25, at 2.5 s
    moved = h.request(slo_ms=2_800, fallbacks=(Fallback(25, 25, "latent-25"),))
    assert moved.jobs[0].level == 25 and not moved.done
    assert h.metrics.escalated._value.get() == 1


async def test_jobs_queued_to_go_after_a_job_do_not_move_it_up_a_level():
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1, escalate=True)
    a = h.add_worker("a", max_batch=1)
    h.request()  # running until 1001.0
    h.request()  # no deadline, queued before it
    job = h.request(slo_ms=2600, fallbacks=(Fallback(25, 25, "latent-25"),))  # at level 0 it ends at 1002.0, in time
    assert job.jobs[0].level == 0 and h.metrics.registry.get_sample_value("argus_escalated_images_total") == 0
    h.clock.now = 1001.0
    h.finish(a, h.batches()[0])
    assert h.batches()[-1].items[0].request_id == job.jobs[0].job_id and h.batches()[-1].level == 0


async def test_a_requests_own_step_count_sets_its_deadline_maths():
    sdxl = LatencyProfile.bundled("sdxl_a100")  # 50 steps at K = 0: 5.1 s; 20 steps: 2.4 s; 150 steps: 14.1 s
    h = Harness(profile=sdxl)
    h.add_worker("a", max_batch=8)
    short = h.request(steps=20, slo_ms=3000)
    long = h.request(steps=150, slo_ms=6000)
    await settle()
    assert not short.done and [len(batch.items) for batch in h.batches()] == [1]
    assert long.future.result().code == "deadline_exceeded"


async def test_a_tight_job_is_not_batched_behind_a_laxer_one_queued_before_it():
    for late_by in (-PIPELINE_HORIZON_S / 2, 0.5):  # the running batch about to end, or running past its estimate
        h = Harness(profile=PROFILE)
        a = h.add_worker("a", max_batch=4)
        h.request()  # running until 1001.0
        lax = h.request(prompt="lax")  # no deadline: queued on a
        h.clock.now = a.busy_until + late_by
        tight = h.request(slo_ms=1_500, prompt="tight")  # alone, it ends 1 s from now: in time
        sent = h.batches()[-1]
        assert [item.request_id for item in sent.items] == [tight.jobs[0].job_id]
        assert a.busy_until <= tight.deadline and [job.worker for job in lax.jobs] == [a]


async def test_a_request_without_a_deadline_is_served_as_if_due_one_slo_after_it_came():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=3.0)
    a = h.add_worker("a", max_batch=1)  # 1 s an image
    h.request(slo_ms=10_000)  # running until 1001.0
    patient = h.request(prompt="patient")  # no deadline: ranked as due at 1003.0
    (patient_job,) = patient.jobs  # released once answered
    for second in range(20):  # a 10 s-SLO request a second, as many as the worker serves
        h.request(slo_ms=10_000, prompt=f"d{second}")
        h.clock.now = a.busy_until
        h.finish(a, h.batches("a")[-1])
    await settle()
    assert isinstance(patient.future.result(), Images)
    assert patient_job.sent_at <= 1002.0  # behind the one running, and the one due at 1010.0 before it


async def test_a_job_joins_a_batch_only_as_large_as_its_own_deadline_allows():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, slo_s=3.0)
    a = h.add_worker("a", max_batch=4)
    h.request()  # running until 1001.0
    patient = h.request(prompt="p")  # no deadline, ranked due at 1003.0: it leads the next batch
    h.clock.now += 0.5
    tight = [h.request(slo_ms=2_600, prompt="p") for _ in range(3)]  # due at 1003.1, ranked after it
    h.clock.now = 1001.0
    h.finish(a, h.batches()[0])
    # a batch of 2 ends at 1003.0, in time for the first; a batch of 4 would end at 1005.0
    assert [item.request_id for item in h.batches()[-1].items] == [patient.jobs[0].job_id, tight[0].jobs[0].job_id]
    assert a.busy_until <= tight[0].deadline


async def test_a_deadline_that_passes_while_the_level_is_chosen_is_answered_then():
    """The sweep looked only at routed jobs: a request waiting on a slow cache thread (a heavy embedder) was
    answered deadline_exceeded only once its level came back, however late."""
    h = Harness()
    h.add_worker("a")
    request = h.request(slo_ms=500, chosen=False)
    h.clock.now += 0.6
    h.dispatcher.sweep()
    await settle()
    reply = request.future.result()
    assert isinstance(reply, Error) and reply.code == "deadline_exceeded" and "level was chosen" in reply.message
    assert h.metrics.deadline_exceeded_by("queued")._value.get() == 1
    h.dispatcher.route(request, 0, None, None)  # the level, when it comes, sends nothing
    assert not h.batches() and h.dispatcher.outstanding_images == 0


async def test_a_request_served_late_is_not_answered_while_its_level_is_chosen():
    h = Harness(serve_late=True)
    h.add_worker("a")
    request = h.request(slo_ms=500, chosen=False)
    h.clock.now += 0.6
    h.dispatcher.sweep()
    await settle()
    assert not request.done
    h.dispatcher.route(request, 0, None, None)
    assert len(h.batches()) == 1


async def test_deadlines_are_judged_at_the_workers_pace_once_it_strays_from_the_profile():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1)
    worker = h.add_worker("a", max_batch=1)
    for _ in range(60):  # the profile says 1 s an image; the worker takes 3
        h.request(slo_ms=60_000)
        h.finish(worker, h.batches()[-1], run_ms=3000.0)
    assert h.dispatcher.pace() == pytest.approx(3.0)
    sent = len(h.batches())
    doomed = h.request(slo_ms=2_500)  # 1 s by the profile: sent; 3 s at the worker's pace: answered at once
    await settle()
    assert doomed.future.result().code == "deadline_exceeded"
    assert len(h.batches()) == sent


async def test_an_upgrade_that_must_queue_goes_back_to_its_k_star_not_to_a_level_between():
    h = Harness(profile=THREE_LEVELS, inflight_batches_per_worker=1, escalate=True)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy
    waiting = h.request(slo_ms=10_000, fallbacks=LADDER, k_star=25)  # planned at 0, below both of its fallbacks
    assert (waiting.jobs[0].level, waiting.jobs[0].latent) == (25, "latent-25")


async def test_the_work_queued_before_a_job_is_shared_among_the_workers_when_it_is_judged():
    """Two workers, each free in 1 s, share the job queued before it: it starts after 1.5 s and ends at 2.5 s at its
    own level, in time. Counted as if one worker ran the work before it, it was moved up a level it had no need of."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1, escalate=True)
    h.add_worker("a", max_batch=1), h.add_worker("b", max_batch=1)
    h.request(), h.request()  # both busy for 1 s
    h.request(slo_ms=2_500)
    job = h.request(slo_ms=3_700, fallbacks=(Fallback(25, 25, "latent-25"),))
    h.dispatcher.sweep()
    assert job.jobs[0].level == 0 and not job.done
    assert h.metrics.escalated._value.get() == 0


async def test_a_job_at_a_level_the_profile_lacks_sheds_no_one():
    """Such a job counts as taking no time: it is in time whenever its wait is, and no job before it is shed for it."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1, escalate=True)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy for 1 s
    long = h.request(slo_ms=4_000, steps=100)  # 2 s, to start by 2 s from now
    unprofiled = h.request(slo_ms=3_500, level=10)  # behind it: starts after 3 s, in time
    h.dispatcher.sweep()
    await settle()
    assert not long.done and not unprofiled.done
