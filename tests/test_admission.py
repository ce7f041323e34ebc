"""Admission: the seeds of a request's images."""

from engine.admission import Admission
from engine.metrics import EngineMetrics
from engine.worker_registry import WorkerRegistry
from protocols.client_messages import Generate
from protocols.limits import MAX_SEED


async def test_every_seed_a_client_may_ask_for_is_its_own_and_the_next_images_wrap():
    admission = Admission(WorkerRegistry(EngineMetrics()), "tiny", 1)
    top = admission.check(Generate("top", "p", n=2, seed=MAX_SEED), True)
    assert top.seeds == [MAX_SEED, 0]
    assert admission.check(Generate("low", "p", n=2, seed=MAX_SEED - 1), True).seeds == [MAX_SEED - 1, MAX_SEED]
