"""The dispatcher alone (no sockets, an injected clock): routing, batching, re-dispatch, explicit failures."""

import logging
from collections import Counter

import pytest
from dispatcher_harness import PROFILE, TWO_LEVELS, Harness, settle
from pictures import image_as_asked

from controller.profiles import LatencyProfile
from engine.dispatch.dispatcher import PIPELINE_HORIZON_S
from engine.dispatch.jobs import Fallback, Job
from engine.fleet.registry import WorkerHandle
from engine.logs.failed_batch_lines import FAILED_LINE_EVERY_S
from engine.logs.request_names import failed_batch_line
from protocols.client_messages import Cancelled, Error, Images
from protocols.worker_messages import REFUSED, Abort, BatchDone, ItemCancelled, ItemDone, ItemFailed
from workers.limits import steps_refusal


async def test_requests_spread_over_idle_workers():
    h = Harness()
    h.add_worker("a"), h.add_worker("b")
    h.request(), h.request()
    assert {w for w, m in h.sent} == {"a", "b"}


async def test_idle_workers_are_found_at_their_current_level():
    h = Harness()
    a, b = h.add_worker("a"), h.add_worker("b")
    h.dispatcher.worker_level_set(b, 10)  # moved while idle
    h.request(level=10)
    assert [(w, m.level) for w, m in h.sent] == [("b", 10)]
    h.request(level=0)
    assert h.sent[-1][0] == "a"
    h.finish(a, h.batches("a")[0])
    h.request(level=0)  # a is idle again: it takes the job, not b (busy, and at another level)
    assert h.sent[-1][0] == "a" and len(h.batches("a")) == 2
    h.finish(b, h.batches("b")[0])
    h.request(level=0)  # a busy, b idle at 10: b takes it rather than let it queue
    assert h.sent[-1][0] == "b" and h.sent[-1][1].level == 0


async def test_queued_jobs_with_the_same_key_batch_together():
    h = Harness(inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=3)
    first = h.request()
    rest = [h.request() for _ in range(4)]
    assert [len(b.items) for b in h.batches()] == [1]
    h.finish(a, h.batches()[0])
    assert [len(b.items) for b in h.batches()] == [1, 3]
    assert first.done and isinstance(first.future.result(), Images)
    assert sum(r.done for r in rest) == 0


async def test_jobs_of_one_key_queued_on_different_workers_leave_as_one_batch():
    """Jobs that must queue go to the worker free first, a few on each; the worker freed first takes them all, not
    only those queued on it (a batch of four takes 4 s on PROFILE, four of one each 1 s on one worker, 2 s on two)."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1)
    a, b = h.add_worker("a", max_batch=4), h.add_worker("b", max_batch=4)
    h.request(), h.request()
    queued = [h.request() for _ in range(4)]
    assert {len(a.queue), len(b.queue)} == {2}  # spread over both
    h.finish(a, h.batches("a")[0])
    assert [len(batch.items) for batch in h.batches("a")] == [1, 4]
    assert {item.request_id for item in h.batches("a")[-1].items} == {r.jobs[0].job_id for r in queued}
    assert not b.queue


async def test_images_with_a_negative_prompt_batch_only_with_others_that_have_one():
    # SD-XL guides a batch by one kind of unconditional embedding: zeros with no negative prompt, encoded text with
    # one; mixed, the images without one would come out as they would not alone
    h = Harness(inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=4)
    h.request(prompt="first")
    for i, negative in enumerate(("blurry", None, "", "dark", None)):
        h.request(prompt=f"image {i}", negative=negative)
    h.finish(a, h.batches()[0])
    h.finish(a, h.batches()[1])
    # each item carries its own request's prompts; "" asks for no negative prompt, as null does
    items = [[(item.prompt, item.negative_prompt) for item in b.items] for b in h.batches()[1:]]
    assert items == [
        [("image 0", "blurry"), ("image 3", "dark")],
        [("image 1", None), ("image 2", None), ("image 4", None)],
    ]


async def test_an_image_tells_how_long_it_queued_and_ran():
    """queue_ms is from the request's admission until the batch that made the image was sent, in milliseconds;
    run_ms is the worker's own figure."""
    h = Harness(inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=1)
    h.request()  # occupies the worker while the next one queues
    queued = h.request()
    h.clock.now += 1.5
    h.finish(a, h.batches()[0])
    h.finish(a, h.batches()[1], run_ms=250.0)
    await settle()
    image = queued.future.result().images[0]
    assert (image.queue_ms, image.run_ms) == (pytest.approx(1500.0), 250.0)


async def test_pngs_that_differ_only_in_output_compression_batch_together():
    h = Harness(inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=4)
    h.request(prompt="first")
    for compression in (10, 90, None):
        h.request(output_compression=compression)
    h.request(output_format="jpeg", output_compression=10)  # a JPEG's is its quality: it goes alone
    h.finish(a, h.batches()[0])
    h.finish(a, h.batches()[1])
    assert [len(b.items) for b in h.batches()] == [1, 3, 1]


async def test_lost_worker_jobs_go_to_another_worker_once():
    h = Harness()
    a, b = h.add_worker("a"), h.add_worker("b")
    request = h.request(n=2)
    assert {w for w, m in h.sent} == {"a", "b"}
    h.dispatcher.worker_lost(a, "exited")
    resent = h.batches("b")
    assert len(resent) == 2
    for batch in resent:
        h.finish(b, batch)
    await settle()
    reply = request.future.result()
    assert isinstance(reply, Images) and len(reply.images) == 2
    assert h.dispatcher.outstanding_images == 0
    # each image's queue time is observed once, for the run that made it
    assert h.metrics.registry.get_sample_value("argus_queue_seconds_count") == 2


async def test_a_worker_that_leaves_holding_nothing_is_logged_as_leaving_not_lost(caplog):
    """Each clean drain or stop logged WARNING "worker lost (left) holding 0 images" for every worker."""
    caplog.set_level(logging.INFO, logger="argus.dispatcher")
    h = Harness()
    busy = h.add_worker("busy")
    h.request()
    idle, dead = h.add_worker("idle"), h.add_worker("dead")
    h.dispatcher.worker_lost(idle, "left")
    h.dispatcher.worker_lost(dead, "exited")  # a worker that died is a loss, holding images or not
    h.dispatcher.worker_lost(busy, "left")
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "argus.dispatcher"]
    assert said == [
        ("INFO", f"worker {idle.name} left"),
        ("WARNING", f"worker {dead.name} lost (exited) holding 0 images"),
        ("WARNING", f"worker {busy.name} lost (left) holding 1 image (request 'r0-p')"),
    ]


async def test_a_lost_workers_jobs_are_each_sent_once_even_when_rerouting_one_frees_room_for_another():
    h = Harness(profile=PROFILE)
    a = h.add_worker("a")
    h.add_worker("b")
    h.request(), h.request()  # one running on each
    h.request(slo_ms=10_000)  # queued on a
    h.clock.now += 1.0 - PIPELINE_HORIZON_S / 2  # b's batch is about to end: b has room for one more
    held = {job.job_id for job in a.held_jobs()}
    before = len(h.batches())
    h.dispatcher.worker_lost(a, "exited")
    h.add_worker("c")
    sent = [item.request_id for batch in h.batches()[before:] for item in batch.items]
    assert sorted(sent) == sorted(held)


async def test_an_image_is_answered_even_when_handling_it_further_fails():
    def broken(worker, job, done):
        raise RuntimeError("a bug in caching what the image brought")

    h = Harness(on_image=broken)
    a = h.add_worker("a")
    request = h.request()
    (batch,) = h.batches()
    h.finish(a, batch)
    await settle()
    assert isinstance(request.future.result(), Images)
    assert h.dispatcher.outstanding_images == 0


async def test_a_job_that_keeps_losing_workers_fails_explicitly():
    h = Harness(max_attempts=2)
    request = h.request()
    for name in ("a", "b"):
        worker = h.add_worker(name)
        h.dispatcher.worker_lost(worker, "exited")
    await settle()
    reply = request.future.result()
    assert isinstance(reply, Error) and reply.code == "worker_lost"
    assert h.dispatcher.outstanding_images == 0


async def test_images_on_their_last_try_run_alone_so_one_that_kills_its_workers_fails_alone():
    """An image that kills every worker it runs on (an input that crashes the model, a batch too large for the host's
    memory) was sent again with its batch-mates each time, and they lost each try with it: all four failed
    worker_lost. On their last try each runs alone, and only the image that kills its worker fails."""
    h = Harness(profile=PROFILE)  # max_attempts 3
    requests = [h.request(prompt=f"p{i}") for i in range(4)]  # no worker yet: they leave together, as one batch
    poison = requests[0].jobs[0].job_id
    answered = 0  # the batches sent, in order: each is answered, or its worker dies of it
    for number in range(4):
        h.add_worker(f"w{number}")
        while answered < len(h.batches()):
            batch = h.batches()[answered]
            answered += 1
            worker = h.registry.get(next(name for name, sent in h.sent if sent is batch).encode())
            if poison in {item.request_id for item in batch.items}:
                h.dispatcher.worker_lost(worker, "exited")
            else:
                h.finish(worker, batch)
    await settle()
    assert [len(batch.items) for batch in h.batches()] == [4, 4, 1, 1, 1, 1]  # together twice, then each alone
    replies = [request.future.result() for request in requests]
    assert isinstance(replies[0], Error) and replies[0].code == "worker_lost"
    assert all(isinstance(reply, Images) for reply in replies[1:])


async def test_a_batch_that_never_reached_its_worker_counts_no_try():
    """A worker gone (its connection closed) refuses the send: the image was tried by no one. Counted, a fleet
    stopped at once failed images worker_lost within milliseconds, each sent to three gone workers in a row."""
    h = Harness(max_attempts=2)
    request = h.request()
    h.gone.update({"a", "b"})
    for name in ("a", "b"):
        h.add_worker(name)
    assert h.metrics.registry.get_sample_value("argus_worker_losses_total", {"cause": "unreachable"}) == 2
    c = h.add_worker("c")
    (batch,) = h.batches("c")
    h.finish(c, batch)
    await settle()
    assert isinstance(request.future.result(), Images)
    assert h.metrics.registry.get_sample_value("argus_redispatched_images_total") == 0  # sent once


async def test_an_image_is_counted_redispatched_once_for_each_time_it_is_sent_again():
    """Counted as it was routed again, an image lost with its worker and then met by a gone worker (a fleet killed at
    once) was counted once for each, though sent again only once."""
    h = Harness()
    a = h.add_worker("a")
    request = h.request()
    h.gone.add("b")
    h.add_worker("b")  # idle, its connection closed: it refuses the send
    h.dispatcher.worker_lost(a, "exited")
    c = h.add_worker("c")
    (batch,) = h.batches("c")
    h.finish(c, batch)
    await settle()
    assert isinstance(request.future.result(), Images)
    assert h.metrics.registry.get_sample_value("argus_redispatched_images_total") == 1


async def test_images_given_back_by_workers_that_leave_count_no_try():
    """A worker stopped as asked (SIGTERM, a scale-down) says Leaving and gives its images back unfailed. Counted
    as tries, images sent from one leaving worker to the next before its Leaving came in (a fleet or Deployment
    scaled down at once) failed worker_lost while the workers that stayed could make them."""
    h = Harness(max_attempts=2)
    request = h.request()
    for name in ("a", "b", "c"):
        h.dispatcher.worker_lost(h.add_worker(name), "left")
    d = h.add_worker("d")
    h.dispatcher.worker_lost(d, "exited")  # a worker that dies with the image still counts its try
    e = h.add_worker("e")
    (batch,) = h.batches("e")
    h.finish(e, batch)
    await settle()
    assert isinstance(request.future.result(), Images)
    assert h.metrics.registry.get_sample_value("argus_redispatched_images_total") == 4  # sent again 4 times


async def test_an_image_meeting_hundreds_of_gone_workers_in_a_row_is_routed_to_a_live_one():
    """A fleet of 300 SIGKILLed at once: its idle workers are picked one after another, each send refused. Each was
    routed again from within the last one's loss, a level of the stack a worker, until RecursionError left the
    request answered internal_error, or never answered."""
    h = Harness()
    gone = [h.add_worker(f"gone-{i}") for i in range(400)]
    h.gone.update(worker.name for worker in gone)
    live = h.add_worker("live")
    request = h.request()
    (batch,) = h.batches("live")
    h.finish(live, batch)
    await settle()
    assert isinstance(request.future.result(), Images)
    assert h.registry.registered() == (live,)  # every gone one is dropped


async def test_no_worker_at_all_fails_after_the_timeout():
    h = Harness(no_worker_timeout_s=5)
    request = h.request()
    h.dispatcher.sweep()
    assert not request.done
    h.clock.now += 6
    h.dispatcher.sweep()
    await settle()
    assert request.future.result().code == "no_worker"
    assert h.dispatcher.outstanding_images == 0


async def test_a_count_the_first_worker_refuses_is_refused_as_admission_would_and_the_others_go_to_it():
    """Admitted before any worker said which step counts it refuses: the request is answered as admission answers it
    once workers are known, and nothing of it is sent; the request queued beside it is."""
    h = Harness()
    refused, served = h.request(n=2, steps=61), h.request(steps=62)
    a = h.add_worker("a", refused_steps=[61, 103])
    await settle()
    reply = refused.future.result()
    assert isinstance(reply, Error) and (reply.code, reply.message) == ("invalid_steps", steps_refusal(61, [61, 103]))
    assert [batch.steps for batch in h.batches()] == [62]
    h.finish(a, h.batches()[0])
    await settle()
    assert isinstance(served.future.result(), Images)
    assert h.dispatcher.outstanding_images == 0


async def test_the_no_worker_timeout_runs_from_when_a_job_lost_its_worker_not_from_admission():
    h = Harness(no_worker_timeout_s=5)
    a = h.add_worker("a")
    request = h.request()
    h.clock.now += 60  # a long run
    h.dispatcher.worker_lost(a, "exited")
    h.clock.now += 1
    h.dispatcher.sweep()
    assert not request.done  # its replacement, restarting, still has time to take it
    h.add_worker("b")
    assert len(h.batches("b")) == 1


async def test_failure_of_one_image_fails_the_request_and_aborts_siblings():
    h = Harness()
    a = h.add_worker("a", max_batch=1)
    request = h.request(n=2)
    first, second = h.batches("a")
    h.dispatcher.batch_done(
        a, BatchDone(first.batch_id, [ItemFailed(first.items[0].request_id, "worker_error", "boom")])
    )
    await settle()
    assert request.future.result().code == "worker_error"
    assert any(isinstance(m, Abort) and m.request_ids == [second.items[0].request_id] for _, m in h.sent)
    # the aborted sibling's late answer is ignored, and nothing is left behind
    h.dispatcher.batch_done(a, BatchDone(second.batch_id, [ItemCancelled(second.items[0].request_id)]))
    assert h.dispatcher.outstanding_images == 0 and not a.inflight


async def test_a_failure_is_a_worker_error_whatever_code_the_worker_names():
    """A worker's own code went to the client (a 429 with a made-up code at HTTP) and became a metric label."""
    h = Harness()
    a = h.add_worker("a")
    request = h.request()
    (batch,) = h.batches()
    h.dispatcher.batch_done(a, BatchDone(batch.batch_id, [ItemFailed(batch.items[0].request_id, "busy", "boom")]))
    await settle()
    assert (request.future.result().code, request.future.result().message) == ("worker_error", "boom")


async def test_a_worker_s_long_failure_reaches_its_client_and_the_log_cut_to_its_start_and_end(caplog):
    """A worker may say anything: 100 KB of a backend's exception went to each image's client, and into a log line."""
    h = Harness()
    a = h.add_worker("a")
    request = h.request()
    (batch,) = h.batches()
    said = "RuntimeError: " + "x" * 100_000 + " the last line"
    with caplog.at_level(logging.WARNING, logger="argus.dispatcher"):
        h.dispatcher.batch_done(a, BatchDone(batch.batch_id, [ItemFailed(batch.items[0].request_id, "e", said)]))
        await settle()
    message = request.future.result().message
    assert len(message) < 1100 and message.startswith("RuntimeError: xxx") and message.endswith("the last line")
    assert "characters cut" in message
    assert max(len(record.getMessage()) for record in caplog.records) < 1300


async def test_a_refused_batch_is_one_line_naming_worker_requests_and_why_and_counts_no_failure(caplog):
    """A worker refusing a batch (a step count its scheduler cannot run, sent before any worker had said so) logged
    its traceback, in the engine's log for a worker the engine started, and named no request; its refusal counted as
    a failure of the worker, and a few took it out of rotation."""
    caplog.set_level(logging.INFO, logger="argus.dispatcher")
    h = Harness()
    a = h.add_worker("a")
    requests = [h.request(prompt=f"p{i}", chosen=False) for i in range(2)]
    for request in requests:
        h.dispatcher.route(request, 0, None, None)
    why = "steps 61: no worker can run exactly 61 steps; ask for 60 or 62"
    for batch in h.batches("a"):
        refused = [ItemFailed(item.request_id, REFUSED, why) for item in batch.items]
        h.dispatcher.batch_done(a, BatchDone(batch.batch_id, refused))
    await settle()
    for request in requests:
        assert (request.future.result().code, request.future.result().message) == ("worker_error", why)
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "argus.dispatcher"]
    assert said == [
        ("WARNING", f"worker {a.name} refused batch {b.batch_id} (1 image, request {r.spec.request_id!r}): {why}")
        for b, r in zip(h.batches("a"), requests, strict=True)
    ]
    assert a.failed_batches == 0


async def test_a_failed_batch_is_one_line_naming_its_requests(caplog):
    caplog.set_level(logging.INFO, logger="argus.dispatcher")
    h = Harness(inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=4)
    busy = h.request(prompt="first")  # the worker runs it: what comes next queues, and leaves as one batch
    requests = [h.request(prompt=f"p{i}") for i in range(3)]
    h.finish(a, h.batches("a")[0])
    await settle()
    assert busy.done
    (batch,) = h.batches("a")[1:]
    failed = [ItemFailed(item.request_id, "worker_error", "RuntimeError: CUDA error") for item in batch.items[:2]]
    h.dispatcher.batch_done(a, BatchDone(batch.batch_id, failed))
    await settle()
    ids = f"{requests[0].spec.request_id!r}, {requests[1].spec.request_id!r}"
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "argus.dispatcher"]
    assert said == [
        (
            "WARNING",
            f"worker {a.name} failed batch {batch.batch_id} (2 of 3 images, requests {ids}): RuntimeError: CUDA error",
        )
    ]
    assert a.failed_batches == 1


async def test_a_lone_worker_failing_every_batch_is_said_at_once_then_once_a_while_counting_the_rest(caplog):
    """The only worker is never taken out of rotation (failing_workers.may_take_out): failing every batch, at once, it
    made a WARNING a batch, 70 lines in 2 s."""
    caplog.set_level(logging.INFO, logger="argus.dispatcher")
    h = Harness()
    a = h.add_worker("a")

    def fail_a_batch() -> None:
        h.request(prompt=f"p{len(h.batches())}")
        batch = h.batches("a")[-1]
        failed = [ItemFailed(item.request_id, "cuda_error", "CUDA error") for item in batch.items]
        h.dispatcher.batch_done(a, BatchDone(batch.batch_id, failed))

    for _ in range(5):
        fail_a_batch()
    h.clock.now += FAILED_LINE_EVERY_S
    fail_a_batch()
    await settle()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "argus.dispatcher"]
    assert [level for level, _ in said] == ["WARNING", "WARNING"], said
    first, second = (message for _, message in said)
    assert first.startswith(f"worker {a.name} failed batch ") and first.endswith(": CUDA error"), first
    assert second.endswith(": CUDA error (4 more batches failed since its last such line)"), second
    assert h.registry.taken_out() == []


@pytest.mark.parametrize(("reasons", "said"), [(2, "(and 1 other reason)"), (3, "(and 2 other reasons)")])
def test_a_failed_batch_line_counts_its_other_reasons_in_words(reasons, said):
    failures = [(f"r{i}", ItemFailed(f"j{i}", "worker_error", f"reason {i}")) for i in range(reasons)]
    named = ", ".join(repr(f"r{i}") for i in range(reasons))
    line = failed_batch_line("w", 7, reasons, failures)
    assert line == f"worker w failed batch 7 ({reasons} images, requests {named}): reason 0 {said}"


async def test_cancel_removes_queued_work_and_replies_once():
    h = Harness(inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=1)
    running = h.request()
    queued = h.request()
    h.dispatcher.cancel(queued)
    await settle()
    assert isinstance(queued.future.result(), Cancelled)
    assert not a.queue
    h.finish(a, h.batches()[0])
    assert isinstance(running.future.result(), Images)
    assert len(h.batches()) == 1  # the cancelled one was never sent


async def test_worker_cancelling_on_its_own_means_the_image_is_still_owed():
    h = Harness()
    a, b = h.add_worker("a"), h.add_worker("b")
    request = h.request()
    (batch,) = h.batches()
    owner = a if h.sent[0][0] == "a" else b
    h.dispatcher.batch_done(owner, BatchDone(batch.batch_id, [ItemCancelled(batch.items[0].request_id)]))
    assert len(h.batches()) == 2 and not request.done


async def test_a_second_batch_goes_to_a_busy_worker_only_when_its_running_one_is_about_to_end():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=2)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy for 1 s
    h.request(slo_ms=10_000)
    assert len(h.batches()) == 1  # kept here, where a worker that frees sooner could take it
    h.clock.now += 1.0 - PIPELINE_HORIZON_S / 2  # the running batch is about to end
    h.request(slo_ms=10_000)  # a routing event: the worker is pumped
    assert len(h.batches()) == 2 and len(a.inflight) == 2


async def test_a_worker_that_runs_dry_takes_the_oldest_jobs_queued_on_a_busy_one():
    h = Harness(inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=4)
    h.request()  # runs on a
    waiting = [h.request(prompt=f"w{i}") for i in range(3)]
    assert all(job.worker is a for r in waiting for job in r.jobs)  # queued behind a's running batch
    b = h.add_worker("b", max_batch=2)  # a worker joins, with nothing to do: it takes a's oldest two, one batch
    stolen = h.batches("b")[-1]
    assert [item.request_id for item in stolen.items] == [r.jobs[0].job_id for r in waiting[:2]]
    assert [j.worker.name for j in waiting[2].jobs] == ["a"]
    h.finish(a, h.batches("a")[0])
    assert [item.request_id for item in h.batches("a")[-1].items] == [waiting[2].jobs[0].job_id]
    for name, worker in (("a", a), ("b", b)):
        h.finish(worker, h.batches(name)[-1])
    await settle()
    assert all(isinstance(r.future.result(), Images) for r in waiting)
    assert h.dispatcher.outstanding_images == 0


async def test_a_freed_worker_serves_the_oldest_queued_job_whatever_its_level():
    h = Harness(inflight_batches_per_worker=1)
    a, b, c = h.add_worker("a"), h.add_worker("b", level=10), h.add_worker("c", level=10)
    h.request(level=0), h.request(level=10), h.request(level=10)  # each busy
    older_at_0 = h.request(level=0)
    at_10 = h.request(level=10)
    h.finish(c, h.batches("c")[0])
    assert [(m.level, [i.request_id for i in m.items]) for m in h.batches("c")[1:]] == [
        (0, [older_at_0.jobs[0].job_id])
    ]
    h.finish(b, h.batches("b")[0])
    assert h.batches("b")[-1].items[0].request_id == at_10.jobs[0].job_id
    assert not a.queue


async def test_a_job_answered_at_the_head_of_its_queue_leaves_nothing_stuck_behind_it():
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1)
    a = h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # busy for 1 s
    doomed = h.request(slo_ms=2_500)  # fits now (1 s wait + 1 s), not once the worker is late
    kept = h.request(slo_ms=10_000)
    h.clock.now += 2.0  # the first batch ends late: the doomed job can no longer make it
    h.finish(a, h.batches()[0])  # its answer and the next batch come in the same turn of the loop
    assert doomed.done and h.batches()[-1].items[0].request_id == kept.jobs[0].job_id
    h.finish(a, h.batches()[-1])
    await settle()
    assert doomed.future.result().code == "deadline_exceeded" and isinstance(kept.future.result(), Images)
    assert h.dispatcher.outstanding_images == 0


async def test_jobs_sent_beside_an_urgent_one_leave_no_entry_behind_in_the_queued_heap():
    h = Harness(profile=PROFILE)
    worker = h.add_worker("a", max_batch=4)
    requests = []
    for _ in range(300):
        # with a far deadline, and without (due one SLO after admission: ahead of the far ones)
        requests += [h.request(slo_ms=10**9), h.request(), h.request(slo_ms=10**9), h.request()]
        for batch in [b for b in h.batches("a") if b.batch_id in worker.inflight]:
            h.finish(worker, batch)
    await settle()
    assert sum(r.done for r in requests) >= len(requests) - 8
    # what is left are the entries of jobs still queued, plus bounded slack: not one per request served
    assert len(h.dispatcher._urgency) <= 2 * h.dispatcher.outstanding_images + 64


async def test_the_images_of_a_request_that_share_a_worker_leave_as_one_batch():
    h = Harness(profile=LatencyProfile("t", 50, {0: (1.0, 1.5)}, "a batch of 2 takes 1.5 s"))
    h.add_worker("a", max_batch=2)
    request = h.request(n=2, slo_ms=1800)  # one after the other would take 2 s; together, 1.5 s
    assert not request.done
    assert [len(batch.items) for batch in h.batches()] == [2]


# batching pays: four images take 1.6 s together, 1 s alone
BATCHED = LatencyProfile("test", 50, {0: (1.0, 1.2, 1.4, 1.6)}, "made up for the test")


async def _served_by(h: Harness, worker: WorkerHandle, request) -> list[int]:
    """Runs what the worker is sent, each batch for its time on BATCHED, until the request is answered: the sizes of
    the batches it was sent."""
    while not request.done:
        batch = h.batches(worker.name)[-1]
        h.clock.now += BATCHED.latency(0, len(batch.items))
        h.finish(worker, batch)
        h.dispatcher.sweep()
        await settle()
    return [len(batch.items) for batch in h.batches(worker.name)]


async def test_the_images_of_a_request_that_waited_for_a_worker_leave_as_one_batch():
    """Routed one by one as the first worker came, the first image left alone and the rest waited behind it: four
    images due in 2 s, which one batch makes in 1.6 s, were answered deadline_exceeded."""
    h = Harness(profile=BATCHED)
    request = h.request(n=4, slo_ms=2_000)
    a = h.add_worker("a", max_batch=4)
    assert await _served_by(h, a, request) == [4]
    assert isinstance(request.future.result(), Images)


@pytest.mark.parametrize("given_back", ["worker lost", "left out", "batch lost on the link"])
async def test_the_images_of_a_request_given_back_leave_again_as_one_batch(given_back):
    """Routed again one by one, the first image given back left alone and the rest waited behind it."""
    h = Harness(profile=BATCHED)
    a = h.add_worker("a", max_batch=4)
    request = h.request(n=4, slo_ms=2_000)
    (batch,) = h.batches("a")
    if given_back == "worker lost":
        h.dispatcher.worker_lost(a, "exited")
        a = h.add_worker("b", max_batch=4)
    else:  # a heartbeat showing a batch lost on the link answers it with no outcome (engine/fleet/link.py)
        left_out = [ItemCancelled(item.request_id) for item in batch.items] if given_back == "left out" else []
        h.dispatcher.batch_done(a, BatchDone(batch.batch_id, left_out))
    assert (await _served_by(h, a, request))[-1] == 4
    assert isinstance(request.future.result(), Images)


async def test_the_images_of_a_request_spread_over_idle_workers():
    h = Harness()
    h.add_worker("a"), h.add_worker("b")
    h.request(n=2)
    assert sorted(worker for worker, _ in h.sent) == ["a", "b"]


async def test_the_images_of_a_request_spread_over_idle_workers_at_other_levels():
    """With one idle worker at the request's level and one at another, the other took one image and the rest queued
    on the one at its level: of 8 images due in 3 s, that worker ran 4 (2.55 s) and the other 1 (1.02 s), then 2
    more, and the last was answered deadline_exceeded, where 4 on each end in 2.55 s. SD-XL-on-A100's times x0.2."""
    times = (1.02, 1.53, 2.04, 2.55, 3.06, 3.57, 4.08, 4.59)
    h = Harness(profile=LatencyProfile("t", 50, {0: times, 5: times}, "sdxl_a100 x0.2"))
    a, b = h.add_worker("a", max_batch=8), h.add_worker("b", max_batch=8, level=5)
    request = h.request(n=8, slo_ms=3000)
    assert sorted((worker, len(batch.items)) for worker, batch in h.sent) == [("a", 4), ("b", 4)]
    h.clock.now += 2.55
    for worker in (a, b):
        h.finish(worker, h.batches(worker.name)[0])
    await settle()
    assert isinstance(request.future.result(), Images)


async def test_routing_an_image_that_must_queue_reads_neither_every_worker_nor_every_queued_job(monkeypatch):
    h = Harness(profile=PROFILE, max_queue=100_000)
    workers = [h.add_worker(f"w{i}") for i in range(256)]
    for _ in workers:
        h.request(slo_ms=10**6)  # every worker busy
    reads = Counter()
    load, is_queued = WorkerHandle.load.fget, h.dispatcher._is_queued
    monkeypatch.setattr(WorkerHandle, "load", property(lambda worker: reads.update(["worker"]) or load(worker)))
    monkeypatch.setattr(h.dispatcher, "_is_queued", lambda job: reads.update(["job"]) or is_queued(job))
    images = 512
    for i in range(images):
        h.request(slo_ms=10**6, prompt=f"p{i}")  # each queues, judged behind those queued before it
    assert all(job.worker is not None for job in h.dispatcher._live.values())
    # a pass over the fleet or the queue per image would be 256 to 512 reads each
    assert reads["worker"] < 4 * images and reads["job"] < 4 * images


async def test_retiring_a_job_answered_as_it_was_routed_does_not_describe_the_whole_queue(monkeypatch):
    described = []
    monkeypatch.setattr(Job, "__repr__", lambda job: described.append(job.job_id) or job.job_id)
    h = Harness(profile=PROFILE)
    h.add_worker("a", max_batch=1)
    h.request(slo_ms=10_000)  # the worker is busy for 1 s
    doomed = h.request(slo_ms=1_500)  # answered at once: it has a worker but is in no queue
    await settle()
    assert doomed.future.result().code == "deadline_exceeded"
    # a deque's remove() names an item it lacks by its repr, which runs over every job and worker it reaches
    assert described == []


async def test_an_image_counts_at_the_level_its_batch_was_sent_at_whatever_the_worker_says():
    """The level in a worker's ItemDone was a Prometheus label: a buggy or hostile worker made a series per image."""
    h = Harness()
    a = h.add_worker("a")
    requests = [h.request(prompt=f"p{i}") for i in range(3)]
    answered = 0
    while answered < len(h.batches()):  # each answer lets the next queued batch go
        batch = h.batches()[answered]
        done = [ItemDone(i.request_id, image_as_asked(batch), 10**6 + answered, [], None, 1.0, 50) for i in batch.items]
        h.dispatcher.batch_done(a, BatchDone(batch.batch_id, done))
        answered += 1
    await settle()
    series = [s for m in h.metrics.registry.collect() if m.name == "argus_images" for s in m.samples]
    assert {(s.labels["level"], s.value) for s in series if s.name == "argus_images_total"} == {("0", 3.0)}
    assert all(isinstance(r.future.result(), Images) and r.future.result().images[0].level == 0 for r in requests)


async def test_workers_lost_leave_nothing_behind_in_the_idle_lists():
    h = Harness()
    h.add_worker("stays")
    for i in range(200):  # workers that come and go at a level no request asks for
        h.dispatcher.worker_lost(h.add_worker(f"churn-{i}", level=25), "exited")
    h.request()  # served by the one left, at level 0
    assert len(h.dispatcher._picks._idle) <= 1


async def test_a_job_that_left_the_queues_is_not_counted_as_work_ahead_of_later_ones():
    """A job queued on a worker counts as work ahead of the jobs ranked after it until it leaves the queue (sent,
    answered, or its worker lost). Counted for good, every job the engine had queued weighed on the requests after
    it: here one sent long ago had a request the fleet serves in time at its own level moved up a level, at a loss
    of quality."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1, escalate=True)
    a = h.add_worker("a", max_batch=1)
    served = h.request(slo_ms=60_000)  # queued, then sent
    h.clock.now += 1
    h.finish(a, h.batches()[-1])
    await settle()
    assert isinstance(served.future.result(), Images)
    h.clock.now += 60  # past the deadline of the job queued: counted still, it would rank ahead of any new job
    h.request(slo_ms=10_000)  # busy for 1 s
    # 1 s wait + 1 s at level 0, nothing else queued: in time without moving up (behind 1 s more, it would move up)
    tight = h.request(slo_ms=2_500, fallbacks=(Fallback(25, 25, "latent-25"),))
    assert not tight.done and tight.jobs[0].level == 0
    h.finish(a, h.batches()[-1])
    assert (h.batches()[-1].level, h.batches()[-1].items[0].request_id) == (0, tight.jobs[0].job_id)
    assert h.metrics.escalated._value.get() == 0
