"""Admission: the seeds of a request's images; a request larger than the queue; a mixed fleet's default size."""

from engine.admission import Admission
from engine.metrics import EngineMetrics
from engine.worker_registry import WorkerRegistry
from protocols.client_messages import Error, Generate
from protocols.limits import MAX_SEED
from protocols.worker_messages import Hello


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
        registry.add(name.encode(), Hello(1, name, "sim", "sim:0", "sim", True, [5], 4, 50, *sizes, 0, 1), 0)
    admitted = admission.check(Generate("default", "p"), queued=0)
    # the usual default (64), raised to the least size the big one takes
    assert (admitted.width, admitted.height) == (128, 128)
