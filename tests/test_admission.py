"""Admission: the seeds of a request's images; a request larger than the queue."""

from engine.admission import Admission
from engine.metrics import EngineMetrics
from engine.worker_registry import WorkerRegistry
from protocols.client_messages import Error, Generate
from protocols.limits import MAX_SEED


async def test_every_seed_a_client_may_ask_for_is_its_own_and_the_next_images_wrap():
    admission = Admission(WorkerRegistry(EngineMetrics()), "tiny", 1, max_queue=1024)
    top = admission.check(Generate("top", "p", n=2, seed=MAX_SEED), True)
    assert top.seeds == [MAX_SEED, 0]
    assert admission.check(Generate("low", "p", n=2, seed=MAX_SEED - 1), True).seeds == [MAX_SEED - 1, MAX_SEED]


async def test_more_images_than_the_queue_holds_is_an_error_not_busy():
    """Busy says retry later; no retry would ever find room for these."""
    admission = Admission(WorkerRegistry(EngineMetrics()), "tiny", 1, max_queue=4)
    refused = admission.check(Generate("big", "p", n=5), room=False)
    assert isinstance(refused, Error) and refused.code == "invalid_request"
    assert "n 5" in refused.message and "--max-queue 4" in refused.message
    assert admission.check(Generate("fits", "p", n=4), room=True).seeds
