"""Admission: the seeds of a request's images; a request larger than the queue; a mixed fleet's default size and
steps; what it refuses and when; the room a request holds until it is answered, and the wait a refusal names."""

import asyncio

import msgspec
import pytest
from fake_clock import Clock

from engine.dispatch.admission import Admission
from engine.fleet.registry import WorkerRegistry
from engine.metrics import EngineMetrics
from protocols.client_messages import Busy, Error, Generate, Images
from protocols.limits import MAX_SEED, MAX_STEPS
from protocols.worker_messages import Hello
from workers.limits import steps_refusal


async def test_every_seed_a_client_may_ask_for_is_its_own_and_the_next_images_wrap():
    admission = Admission(WorkerRegistry(EngineMetrics()), "tiny", max_queue=1024)
    top = admission.check(Generate("top", "p", n=2, seed=MAX_SEED), queued=0)
    assert top.seeds == [MAX_SEED, 0]
    assert admission.check(Generate("low", "p", n=2, seed=MAX_SEED - 1), queued=0).seeds == [MAX_SEED - 1, MAX_SEED]


async def test_more_images_than_the_queue_holds_is_an_error_not_busy():
    """Busy says retry later; no retry would ever find room for these."""
    admission = Admission(WorkerRegistry(EngineMetrics()), "tiny", max_queue=4)
    refused = admission.check(Generate("big", "p", n=5), queued=4)
    assert isinstance(refused, Error) and refused.code == "invalid_request"
    assert "n 5" in refused.message and "--max-queue 4" in refused.message
    assert admission.check(Generate("fits", "p", n=4), queued=0).seeds


async def test_a_mixed_fleet_defaults_to_the_usual_size_that_every_worker_takes():
    registry = WorkerRegistry(EngineMetrics())
    admission = Admission(registry, "tiny", max_queue=4)
    # (min, max, default): the first to join defaults to 1024, which the two small ones do not take
    for name, sizes in (("big", (128, 2048, 1024)), ("small1", (64, 256, 64)), ("small2", (64, 256, 64))):
        registry.add(name.encode(), hello(name, *sizes), 0)
    admitted = admission.check(Generate("default", "p"), queued=0)
    # the usual default (64), raised to the least size the big one takes
    assert (admitted.width, admitted.height) == (128, 128)


async def test_a_worker_sets_the_steps_a_request_without_them_runs_and_those_it_refuses():
    """The refused counts are read afresh for readiness too (engine/http/readiness.py), before any request came in."""
    registry = WorkerRegistry(EngineMetrics())
    admission = Admission(registry, "tiny", max_queue=4)
    registry.add(b"w", msgspec.structs.replace(hello("w", default_steps=30), refused_steps=[61]), 0)
    assert admission.refused_steps() == {61}
    assert admission.check(Generate("default", "p"), queued=0).steps == 30
    assert admission.check(Generate("asked", "p", steps=40), queued=0).steps == 40
    refused = admission.check(Generate("refused", "p", steps=61), queued=0)
    assert isinstance(refused, Error) and refused.code == "invalid_steps"


async def test_a_size_no_worker_takes_is_refused_naming_it():
    registry = WorkerRegistry(EngineMetrics())
    registry.add(b"w", hello("w", 64, 256, 64), 0)
    refused = Admission(registry, "tiny", max_queue=4).check(Generate("wide", "p", width=512), queued=0)
    assert isinstance(refused, Error) and refused.code == "invalid_size" and "width 512" in refused.message


async def test_the_deadline_is_the_slo_after_admission():
    clock = Clock(100.0)
    admitted = Admission(WorkerRegistry(EngineMetrics()), "tiny", max_queue=4, clock=clock).check(
        Generate("due", "p", slo_ms=2500), queued=0
    )
    assert (admitted.admitted_at, admitted.deadline) == (100.0, 102.5)


async def test_a_clients_images_hold_its_share_of_the_queue_until_each_request_is_answered():
    admission = Admission(WorkerRegistry(EngineMetrics()), "tiny", max_queue=2)
    first, second = (admission.check(Generate(f"a{i}", "p"), queued=i, client="a") for i in range(2))
    assert isinstance(admission.check(Generate("b", "p"), queued=2, client="b"), Busy)  # b waits for room
    await answer(first)
    refused = admission.check(Generate("a2", "p"), queued=1, client="a")
    assert isinstance(refused, Busy) and refused.reason == "client_share"  # a holds its half while b waits
    await answer(second)
    assert not isinstance(admission.check(Generate("a3", "p"), queued=0, client="a"), Busy)


async def test_a_refusal_names_the_wait_at_the_pace_answers_freed_room_while_the_queue_held_images():
    clock = Clock(0.0)
    admission = Admission(WorkerRegistry(EngineMetrics()), "tiny", max_queue=1, clock=clock)
    first = admission.check(Generate("first", "p"), queued=0)
    clock.now = 10.0
    await answer(first)  # one image freed in the 10 s the queue held it
    clock.now = 25.0  # idle: an engine asked nothing frees nothing, and is not counted slower for it
    admission.check(Generate("second", "p"), queued=0)
    refused = admission.check(Generate("third", "p"), queued=1)
    assert isinstance(refused, Busy) and refused.retry_after_ms == 10_000


@pytest.mark.parametrize(
    ("width", "height", "refused"),
    [
        (100, 64, "width 100 must be a multiple of 8 from 64 to 256"),  # in range, but not a multiple of 8
        (64, 512, "height 512 must be a multiple of 8 from 64 to 256"),  # the width fits, the height does not
        (64, 256, None),  # the largest and least sides taken
    ],
)
async def test_each_side_is_held_to_the_workers_rule(width, height, refused):
    registry = WorkerRegistry(EngineMetrics())
    registry.add(b"w", hello("w", 64, 256, 64), 0)
    reply = Admission(registry, "tiny", max_queue=4).check(Generate("r", "p", width=width, height=height), queued=0)
    if refused is None:
        assert (reply.width, reply.height) == (width, height)
    else:
        assert isinstance(reply, Error) and (reply.code, reply.message) == ("invalid_size", refused)


@pytest.mark.parametrize(
    ("steps", "nearest"), [(2, "ask for 1 or 3"), (MAX_STEPS - 1, f"ask for {MAX_STEPS - 2} or {MAX_STEPS}")]
)
def test_a_refused_step_count_names_the_nearest_down_to_1_and_up_to_the_most(steps, nearest):
    assert steps_refusal(steps, {steps}).endswith(nearest)


def hello(name: str, min_size: int = 64, max_size: int = 256, default_size: int = 64, default_steps: int = 50):
    return Hello(1, name, "sim", "sim:0", "sim", True, [5], 4, default_steps, min_size, max_size, default_size, 0, 1)


async def answer(request) -> None:
    request.future.set_result(Images(request.spec.request_id, []))
    await asyncio.sleep(0)  # its done-callback frees its room
