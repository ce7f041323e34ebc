"""`--sim-latents sdxl`: a sim worker that passes latents of SD-XL's shape for the image size, a model of its own.

Sim workers pass 4x2x2 placeholders, and from 8ddb067 an engine restores only latents of the shape its workers take,
so no sim engine could hold a cache of real size, and `argus bench checkpoint` timed none. The SD-XL kind is another
sim model: its engine takes latents of that shape, and a cache saved by either kind is refused whole by the other.
"""

import dataclasses
import re

import numpy as np
import pytest
from run_controls import NoControl

from controller.profiles import LatencyProfile
from engine.cache.cache_dir import load_saved_cache
from engine.cache.embedders import HashEmbedder
from engine.cache.prompt_cache import PromptCache, ShapeKey
from engine.cli import UsageError, build_parser, engine_config
from engine.commands.worker import check_worker_args
from engine.config import CacheConfig
from engine.fleet.launcher import worker_command
from protocols.worker_messages import Generate, GenerateItem
from workers.limits import DEFAULT_LEVELS, SIM_LATENT_SHAPE
from workers.main import sim_similarity_table
from workers.model_id import SIM_PROFILE, model_latent_shape, sim_model_id
from workers.sim_backend import SimBackend

HASH = sim_similarity_table("hash")
PLACEHOLDER = sim_model_id(LatencyProfile.bundled(SIM_PROFILE))
SDXL_LATENTS = sim_model_id(LatencyProfile.bundled(SIM_PROFILE), "sdxl")
EMBEDDER = HashEmbedder()


def latents_of(backend: SimBackend, width: int, height: int) -> np.ndarray:
    items = [GenerateItem("r", "a lighthouse at dusk", 1, None, None)]
    (done,) = backend.run(Generate(1, 0, 50, width, height, 5.0, "png", items), NoControl())
    return done.latents


def test_a_sim_worker_passing_sdxl_latents_is_another_model_whose_latents_have_the_images_size():
    sdxl = SimBackend(HASH, time_scale=0.0, latents="sdxl")
    placeholder = SimBackend(HASH, time_scale=0.0)
    assert placeholder.describe().model_id == PLACEHOLDER == sim_model_id(LatencyProfile.bundled(SIM_PROFILE))
    assert sdxl.describe().model_id == SDXL_LATENTS != PLACEHOLDER
    levels = len(DEFAULT_LEVELS)
    assert latents_of(sdxl, 1024, 768).shape == (levels, 4, 96, 128)
    assert latents_of(placeholder, 1024, 768).shape == (levels, *SIM_LATENT_SHAPE)
    # what the engine takes from such workers, and restores for them, follows the identity their hello names
    assert model_latent_shape("sim", SDXL_LATENTS, 1024, 768) == (4, 96, 128)
    assert model_latent_shape("sim", PLACEHOLDER, 1024, 768) == SIM_LATENT_SHAPE
    with pytest.raises(ValueError, match="latents 'full': not one of placeholder, sdxl"):
        SimBackend(HASH, latents="full")


def save_sdxl_latents(directory, model: str, prompts: int = 3) -> None:
    cache = PromptCache("hash", EMBEDDER.dim, DEFAULT_LEVELS, max_bytes=64 << 20, model=model)
    latent = np.ones((4, 128, 128), np.float16)
    for i in range(prompts):
        text = f"a saved prompt, number {i}"
        cache.insert(text, EMBEDDER.embed([text])[0], ShapeKey(50, 1024, 1024), dict.fromkeys(DEFAULT_LEVELS, latent))
    cache.save(str(directory))
    cache.close()


def test_a_cache_of_sdxl_latents_is_restored_whole_by_its_engine_and_refused_whole_by_a_placeholder_one(tmp_path):
    config = CacheConfig(directory=str(tmp_path))
    save_sdxl_latents(tmp_path, SDXL_LATENTS)
    restored = load_saved_cache(config, SDXL_LATENTS, EMBEDDER, DEFAULT_LEVELS)
    assert restored is not None and restored.stats().prompts == 3
    restored.close()
    # another model's cache: set aside, never served to workers that take 4x2x2
    assert load_saved_cache(config, PLACEHOLDER, EMBEDDER, DEFAULT_LEVELS) is None
    assert [path.name.split(".rejected-")[0] for path in tmp_path.glob("*.rejected-*")] == ["prompt_cache.argus"]


def test_a_sim_models_identity_stays_what_saved_caches_were_saved_under():
    """Its profile's name, steps and latencies, and the kind of latents beside placeholders. A change to how it is
    taken makes every sim cache saved before another model's, refused whole at the restore."""
    profile = LatencyProfile("p", 50, {0: (1.0, 1.5), 10: (0.8, 1.2)}, "made in a test", time_scale=0.5, model="x")
    assert sim_model_id(profile) == "sim:98e05d528bfc97a0"
    assert sim_model_id(profile, "sdxl") == "sim:54455caccee85255"
    assert sim_model_id(dataclasses.replace(profile, steps=40)) == "sim:00152b0cb2e6025a"


def test_argus_serve_sim_latents_names_the_model_and_gives_its_workers_the_flag():
    config = engine_config(build_parser().parse_args(["serve", "--backend", "sim", "--sim-latents", "sdxl"]))
    assert (config.model_id, config.launch.sim_latents) == (SDXL_LATENTS, "sdxl")
    command = worker_command(config.launch.worker_config("ipc:///tmp/w", slot=0, threads=None))
    assert command[command.index("--sim-latents") + 1] == "sdxl"
    assert engine_config(build_parser().parse_args(["serve", "--backend", "sim"])).model_id == PLACEHOLDER
    # a --model-id of the other kind is another model's
    with pytest.raises(
        UsageError, match=re.escape(f"--model-id {PLACEHOLDER} is not the model of --backend sim --sim-latents sdxl")
    ):
        engine_config(
            build_parser().parse_args(["serve", "--backend", "sim", "--sim-latents", "sdxl", "--model-id", PLACEHOLDER])
        )


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["serve", "--backend", "tiny", "--sim-latents", "sdxl"], "--sim-latents is for the sim backend; tiny passes"),
        (["worker", "--connect", "tcp://127.0.0.1:5556", "--sim-latents", "sdxl"], "--sim-latents is for the sim"),
        (
            [
                "worker",
                "--connect",
                "tcp://127.0.0.1:5556",
                "--backend",
                "sim",
                "--count",
                "4",
                "--sim-latents",
                "sdxl",
            ],
            "--count runs many simulated workers in one process with placeholder latents only",
        ),
    ],
)
def test_sim_latents_is_refused_where_no_sim_worker_would_pass_them(argv, says):
    args = build_parser().parse_args(argv)
    with pytest.raises(UsageError, match=re.escape(says)):
        engine_config(args) if argv[0] == "serve" else check_worker_args(args)
