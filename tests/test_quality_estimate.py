"""Every image the engine serves carries its estimated quality, whatever the backend, in its reply (HTTP's `argus`
object, ZeroMQ's ImageResult) and in /metrics: through real engines."""

import json

import pytest
from dispatcher_harness import Harness, settle
from openai import OpenAI

from controller.level_shares import covering_level
from controller.profiles import DegradationMatrix, QualityModel
from controller.quality_estimate import QualityEstimate
from controller.similarity import SimilarityTable
from engine.client import ArgusClient
from engine_process import start_engine
from protocols.client_messages import Images

HASH = SimilarityTable.bundled("hash")  # the engine's default embedder's table: its modelled quality's
MODEL = QualityModel(HASH)
PROMPT = "a red fox in a snowy forest at dawn, oil painting"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # nirvana: the level comes from the similarity table alone (argus, at light load, would rather spend its idle
    # capacity on exact images)
    engine = start_engine(tmp_path_factory.mktemp("quality"), "--policy", "nirvana", backend="tiny", workers=1)
    yield engine
    assert engine.stop() == 0


def generate(engine, prompt: str, **fields) -> Images:
    with ArgusClient(engine.client_address, timeout_s=120) as client:
        reply = client.generate(prompt, width=64, height=64, seed=1, **fields)
    assert isinstance(reply, Images), reply
    return reply


def test_over_zeromq_an_exact_image_is_estimated_whole_and_a_resumed_one_by_the_quality_model(engine):
    exact = generate(engine, PROMPT).images[0]
    assert (exact.level, exact.estimated_quality) == (0, 100.0)
    near = generate(engine, PROMPT + "!").images[0]
    assert near.level > 0 and near.similarity is not None
    # the model's expected quality at its level and its neighbour's similarity: below the exact image's
    assert near.estimated_quality == pytest.approx(MODEL.expected(near.level, near.similarity))
    assert near.estimated_quality < 100.0
    # a real backend measures nothing: the sim backend's own figure stays empty
    assert near.quality is None and not near.simulated


def test_over_http_the_estimate_is_of_the_level_a_resume_of_other_steps_was_judged_at(engine):
    """At 20 steps a resume at step 10 is half the run, judged at level 25 of 50: its estimate is level 25's, not
    level 10's, which its reply's `level` (the step it resumed at) would have given."""
    prompt = "an old stone bridge over a river in autumn, oil on canvas"
    client = OpenAI(base_url=engine.http + "/v1", api_key="unused", max_retries=0, timeout=120)

    def image(prompt: str) -> dict:
        response = client.images.generate(
            prompt=prompt, size="64x64", extra_body={"seed": 1, "num_inference_steps": 20}
        )
        return response.data[0].model_extra["argus"]

    exact = image(prompt)
    assert (exact["level"], exact["estimated_quality"], exact["quality"]) == (0, 100.0, None)
    near = image(prompt + "!")
    assert near["level"] > 0 and near["steps_run"] == 20 - near["level"]
    judged = covering_level(near["level"], 20, 50, HASH.levels)
    assert judged > near["level"]
    assert near["estimated_quality"] == pytest.approx(MODEL.expected(judged, near["similarity"]), abs=0.005)
    assert near["estimated_quality"] < MODEL.expected(near["level"], near["similarity"])


def test_metrics_count_every_image_served_by_its_estimate(engine):
    def histogram() -> tuple[float, float, float]:
        name = "argus_estimated_quality_percent"
        return (
            engine.metric(f"{name}_count"),
            engine.metric(f"{name}_sum"),
            engine.metric(f"{name}_bucket", le="99.0"),
        )

    def images_made() -> float:
        return sum(engine.metric("argus_images_total", level=str(level)) for level in HASH.levels)

    prompt = "a windmill in a tulip field, watercolour"
    # 10 steps, the fewest that cache a latent to resume from (step 5): what is counted is each image, not its steps
    generate(engine, prompt, steps=10)  # cached for the next one to resume from
    count, total, below_99 = histogram()
    made = images_made()
    # of its three images the first resumes from the neighbour's latent, the others run in full
    estimates = [image.estimated_quality for image in generate(engine, prompt + "!", n=3, steps=10).images]
    assert estimates[0] < 99.0 and estimates[1:] == [100.0, 100.0]
    after_count, after_total, after_below_99 = histogram()
    assert after_count - count == images_made() - made == 3
    assert after_total - total == pytest.approx(sum(estimates))
    assert after_below_99 - below_99 == 1
    # an operator's mean over the engine's life (PromQL: rate(_sum) / rate(_count)) is of every image it made
    assert after_count == images_made()


# -- sim workers: their own modelled figure beside the estimate -------------------------------------------------------
def sim_engine(tmp_path, *flags):
    return start_engine(tmp_path, "--policy", "nirvana", "--time-scale", "0.001", *flags, backend="sim", workers=1)


def sim_images(engine, prompt: str):
    with ArgusClient(engine.client_address, timeout_s=60) as client:
        replies = [client.generate(text, seed=1) for text in (prompt, prompt + "!")]
    assert all(isinstance(reply, Images) for reply in replies), replies
    return [reply.images[0] for reply in replies]


def test_a_sim_images_modelled_quality_is_its_estimate_with_the_prompts_own_offset(tmp_path):
    engine = sim_engine(tmp_path)
    try:
        exact, near = sim_images(engine, PROMPT)
    finally:
        assert engine.stop() == 0
    assert (exact.quality, exact.estimated_quality) == (100.0, 100.0)
    assert near.level > 0 and near.simulated
    assert near.estimated_quality == pytest.approx(MODEL.expected(near.level, near.similarity))
    # the simulation's stand-in for a measurement: the same model, with the prompt's noise that no estimate knows
    assert near.quality == pytest.approx(MODEL.quality(near.level, near.similarity, PROMPT + "!"))
    assert near.quality != pytest.approx(near.estimated_quality)


def measured(similarity_class: int, level: int) -> float:
    """A measured quality per (class, level), far from the model's and falling with the level."""
    return 90.0 - level + similarity_class / 10


def test_given_a_quality_profile_the_estimate_is_its_measured_class(tmp_path):
    # one band inside each class of the hash table, every class measured at every level
    bands = {5: "0.5-0.6", 10: "0.75-0.8", 15: "0.85-0.89", 20: "0.9-0.94", 25: "0.95-1.0"}
    profile = {str(level): {band: measured(k, level) for k, band in bands.items()} for level in HASH.levels[1:]}
    path = tmp_path / "quality.json"
    path.write_text(json.dumps(profile))
    engine = sim_engine(tmp_path, "--quality-profile", str(path))
    try:
        exact, near = sim_images(engine, PROMPT)
    finally:
        assert engine.stop() == 0
    assert exact.estimated_quality == 100.0
    assert near.level > 0
    assert near.estimated_quality == pytest.approx(measured(HASH.level_for(near.similarity), near.level))
    # the sim worker's own figure is still its model's: the profile is the engine's, what it plans and estimates by
    assert near.quality == pytest.approx(MODEL.quality(near.level, near.similarity, PROMPT + "!"))


async def test_an_image_resumed_with_no_similarity_known_is_answered_without_an_estimate():
    """The engine never resumes an image without its neighbour's similarity; were one so routed, its estimate (the
    model raises for it) must not cost the batch's replies: it is answered, its estimate null."""
    h = Harness()
    worker = h.add_worker("a")
    request = h.request(level=10, chosen=False)
    h.dispatcher.route(request, 10, None, None, (), 10, None)
    h.finish(worker, h.batches()[-1])
    await settle()
    reply = request.future.result()
    assert isinstance(reply, Images) and reply.images[0].estimated_quality is None
    assert QualityEstimate(MODEL)(10, None) is None and QualityEstimate(MODEL)(0, None) == 100.0


def test_a_measured_estimate_is_of_the_neighbours_class_served_at_the_level():
    """In-process: a neighbour of class 25 served at level 5 is the class's row at 5, not class 5's row at 25."""
    levels = HASH.levels
    # every figure distinct: class k at level k' is 1000 k + k'
    rows = {k: {k_prime: float(1000 * k + k_prime) for k_prime in levels} for k in levels}
    estimate = QualityEstimate(MODEL, DegradationMatrix(HASH, rows, "test"))
    assert HASH.level_for(0.99) == 25
    assert estimate(5, 0.99) == 25_005.0
