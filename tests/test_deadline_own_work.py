"""A request whose own images cannot all be made by its deadline, however the fleet batches them, is answered 504
`deadline_exceeded` (cause `predicted`) before any is made (engine/dispatch/own_work.py). One worker making one image
at a time answered a request of 10 that could never make it only once the image ahead of its next was late alone,
six images made and thrown away."""

import pytest
from dispatcher_harness import PROFILE, Harness, settle

from controller.profiles import LatencyProfile
from engine_process import start_engine

# one image takes 5.1 s x 0.05 = 0.255 s, one at a time: ten take 2.55 s
TEN_IMAGES_S = 10 * 5.1 * 0.05


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(
        tmp_path_factory.mktemp("own-work"), "--max-batch", "1", "--time-scale", "0.05", workers=1, backend="sim"
    )
    yield engine
    assert engine.stop() == 0


def post(engine, slo_ms: float) -> tuple[int, dict]:
    return engine.generate({"prompt": "ten lighthouses", "n": 10, "size": "64x64", "slo_ms": slo_ms})


def images_made(engine) -> float:
    return engine.metric("argus_images_total", level="0")


def test_a_request_its_own_images_make_late_is_answered_before_any_is_made(engine):
    made, predicted = images_made(engine), engine.metric("argus_deadline_exceeded_total", cause="predicted")
    status, reply = post(engine, slo_ms=TEN_IMAGES_S * 1000 * 0.8)
    assert status == 504 and reply["error"]["code"] == "deadline_exceeded", reply
    assert engine.metric("argus_deadline_exceeded_total", cause="predicted") == predicted + 1
    assert images_made(engine) == made, "images were made for a request that could never have them in time"


def test_a_request_its_own_images_make_in_time_is_served(engine):
    made = images_made(engine)
    status, reply = post(engine, slo_ms=TEN_IMAGES_S * 1000 * 1.2)
    assert status == 200 and len(reply["data"]) == 10, reply
    assert images_made(engine) == made + 10


async def test_a_request_its_own_images_left_can_no_longer_make_in_time_is_answered_at_the_sweep():
    """Admitted with time for its images (3 s of 3.5), its first ran slow: its two images left need 2 s of the 1.7 s it
    has, though the next alone would make it. It was sent image by image until one was late alone."""
    h = Harness(profile=PROFILE, inflight_batches_per_worker=1)
    h.add_worker("a", max_batch=1)
    request = h.request(n=3, slo_ms=3_500)
    assert len(h.batches()) == 1 and not request.done
    h.clock.now += 1.8  # its first image still runs
    h.dispatcher.sweep()
    await settle()
    assert request.future.result().code == "deadline_exceeded"
    assert h.metrics.registry.get_sample_value("argus_deadline_exceeded_total", {"cause": "predicted"}) == 1


async def test_a_request_that_makes_it_only_as_one_batch_is_sent():
    """The bound takes the least each image costs in any batch the worker runs: two images, 1 s each alone and 1.2 s
    together, make a deadline of 1.3 s together."""
    h = Harness(profile=LatencyProfile("t", 50, {0: (1.0, 1.2)}, "a batch of 2 takes 1.2 s"))
    h.add_worker("a", max_batch=2)
    request = h.request(n=2, slo_ms=1_300)
    assert [len(batch.items) for batch in h.batches()] == [2] and not request.done
