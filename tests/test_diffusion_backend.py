"""DiffusionBackend on the tiny random SD-XL: ApproxC resume, aborts, formats."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionXLPipeline,
)
from msgspec.structs import replace
from PIL import Image

from engine.cli import main
from protocols.codec import Blob
from protocols.limits import MAX_STEPS
from protocols.worker_messages import (
    REFUSED,
    BatchDone,
    Generate,
    GenerateItem,
    ItemCancelled,
    ItemDone,
    ItemFailed,
    engine_side_codec,
    worker_side_codec,
)
from workers import diffusion_backend
from workers.backend import BackendUnavailable, BatchRefused
from workers.diffusion_backend import DiffusionBackend, load_sdxl
from workers.image_encoding import encode_image
from workers.limits import BACKEND_SIZES
from workers.tiny_pipeline import build_tiny_sdxl

STEPS = 16  # 4 past the highest level, 12: each run of a test pays for every step it takes
LEVELS = (4, 8, 12)
TINY = BACKEND_SIZES["tiny"]
WORKER = ["worker", "--connect", "tcp://127.0.0.1:9"]


class RecordingControl:
    """Counts between_steps calls; reports `abort_ids` aborted (cancelled by the engine) once `abort_after` steps
    ran, and every request aborted once `stopping` is set (the worker stopping, which cancels nothing), as it is once
    `stop_after` steps ran (its stop signal came during that step)."""

    def __init__(self, abort_ids: tuple[str, ...] = (), abort_after: int = 0, stop_after: int | None = None):
        self.steps = 0
        self.stopping = False
        self._abort_ids = set(abort_ids)
        self._abort_after = abort_after
        self._stop_after = stop_after

    def between_steps(self) -> None:
        self.steps += 1
        self.stopping = self.stopping or self.steps == self._stop_after

    def is_aborted(self, request_id: str) -> bool:
        return self.stopping or self.cancelled(request_id)

    def cancelled(self, request_id: str) -> bool:
        return request_id in self._abort_ids and self.steps >= self._abort_after


class UnetCalls:
    def __init__(self, unet: torch.nn.Module):
        self.count = 0
        unet.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.count += 1


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_sdxl(seed=0)


@pytest.fixture(scope="module")
def backend(pipe) -> DiffusionBackend:
    return DiffusionBackend(
        pipe, "tiny", "cpu", "tiny:test", levels=LEVELS, default_steps=STEPS, max_batch=4, **tiny_sizes()
    )


def tiny_sizes() -> dict[str, int]:
    return {"min_size": TINY.min_size, "max_size": TINY.max_size, "default_size": TINY.default_size}


@pytest.fixture(scope="module")
def hook(pipe) -> UnetCalls:
    return UnetCalls(pipe.unet)


@pytest.fixture
def unet_calls(hook: UnetCalls) -> Iterator[UnetCalls]:
    hook.count = 0
    yield hook


def batch(
    level: int = 0,
    items: tuple[GenerateItem, ...] = (GenerateItem("r1", "a red cat on a roof", 7),),
    steps: int = STEPS,
    width: int = 64,
    height: int = 64,
    output_format: str = "png",
    guidance_scale: float = 5.0,
) -> Generate:
    return Generate(
        batch_id=3,
        level=level,
        steps=steps,
        width=width,
        height=height,
        guidance_scale=guidance_scale,
        output_format=output_format,
        items=list(items),
    )


def decode(image: bytes) -> Image.Image:
    decoded = Image.open(io.BytesIO(image))
    decoded.load()
    return decoded


@pytest.fixture(scope="module")
def full_run(backend: DiffusionBackend) -> ItemDone:
    (done,) = backend.run(batch(), RecordingControl())
    assert isinstance(done, ItemDone)
    return done


def test_full_run_returns_image_and_latents_at_every_level(backend, unet_calls):
    control = RecordingControl()
    (done,) = backend.run(batch(), control)
    assert isinstance(done, ItemDone)
    assert (done.request_id, done.level, done.quality) == ("r1", 0, None)
    assert done.run_ms > 0
    assert decode(done.image).size == (64, 64)
    assert sorted(done.by_level()) == list(LEVELS)
    for latent in done.by_level().values():
        assert latent.shape == (4, 8, 8) and latent.dtype == np.float16
        assert np.isfinite(latent).all()
    assert unet_calls.count == STEPS
    assert control.steps == STEPS
    assert done.steps_run == STEPS


@pytest.mark.parametrize(("asked", "returned"), [([8], [8]), ([4, 12, 30], [4, 12]), ([], [])])
def test_a_run_brings_back_the_latents_the_engine_asks_for(backend, asked, returned):
    """The engine's cache levels (`argus serve --levels`), none without a cache: the others crossed the wire to be
    dropped, or refused the whole insert as levels the cache does not keep."""
    (done,) = backend.run(replace(batch(), latent_levels=asked), RecordingControl())
    assert isinstance(done, ItemDone) and sorted(done.by_level()) == returned


def test_default_levels_at_fifty_steps(pipe, unet_calls):
    default = DiffusionBackend(pipe, "tiny", "cpu", "tiny:test", **tiny_sizes())
    (done,) = default.run(batch(steps=50), RecordingControl())
    assert sorted(done.by_level()) == [5, 10, 15, 20, 25]
    assert unet_calls.count == 50


def test_non_square_latents_follow_the_image_shape(backend):
    (done,) = backend.run(batch(width=96, height=64), RecordingControl())
    assert decode(done.image).size == (96, 64)
    assert all(latent.shape == (4, 8, 12) for latent in done.by_level().values())


@pytest.mark.parametrize("level", LEVELS)
def test_resume_runs_exactly_the_remaining_steps(backend, full_run, unet_calls, level):
    item = GenerateItem("r2", "a blue dog in the snow", 11, full_run.by_level()[level])
    control = RecordingControl()
    (done,) = backend.run(batch(level=level, items=(item,)), control)
    assert isinstance(done, ItemDone) and done.level == level
    assert unet_calls.count == STEPS - level
    assert control.steps == STEPS - level
    assert done.steps_run == STEPS - level  # what the worker reports over the wire
    assert sorted(done.by_level()) == [k for k in LEVELS if k > level]
    assert decode(done.image).size == (64, 64)


@pytest.mark.parametrize(("steps", "level"), [(30, 10), (7, 3), (33, 4)])
def test_resume_count_is_exact_off_the_timestep_grid(backend, full_run, unet_calls, steps, level):
    # diffusers' own denoising_start cutoff runs one step too many for these
    item = GenerateItem("r2", "a blue dog", 11, full_run.by_level()[4])
    backend.run(batch(level=level, steps=steps, items=(item,)), RecordingControl())
    assert unet_calls.count == steps - level


# the float16 latent the engine's cache holds, checked against a float32 model's range, overflowed float32's bound
# cast to float16 and warned at every resumed batch of a CPU worker
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_resuming_own_latent_continues_the_same_trajectory(backend, full_run):
    item = GenerateItem("r1", "a red cat on a roof", 7, full_run.by_level()[4])
    (done,) = backend.run(batch(level=4, items=(item,)), RecordingControl())
    # equal up to the float16 rounding of the cached latent
    for k in (8, 12):
        np.testing.assert_allclose(done.by_level()[k], full_run.by_level()[k], atol=0.1)
    resumed = np.asarray(decode(done.image), dtype=int)
    full = np.asarray(decode(full_run.image), dtype=int)
    assert np.abs(resumed - full).max() <= 3


@pytest.mark.parametrize("level", [0, 8])
def test_same_inputs_give_identical_outputs(backend, full_run, level):
    latent = full_run.by_level()[level] if level else None
    runs = [
        backend.run(batch(level=level, items=(GenerateItem("r", "a castle", 5, latent),)), RecordingControl())[0]
        for _ in range(2)
    ]
    assert runs[0].image == runs[1].image
    assert runs[0].by_level().keys() == runs[1].by_level().keys()
    for k in runs[0].by_level():
        assert np.array_equal(runs[0].by_level()[k], runs[1].by_level()[k])


def test_different_seed_gives_a_different_image(backend, full_run):
    (other,) = backend.run(batch(items=(GenerateItem("r1", "a red cat on a roof", 8),)), RecordingControl())
    assert other.image != full_run.image
    assert not np.array_equal(other.by_level()[4], full_run.by_level()[4])


def test_seeds_apart_by_two_to_the_32_give_different_images(backend, full_run):
    # torch's CPU generator keeps a seed's low 32 bits: 7 + 2**32 drew seed 7's noise, and its image
    (other,) = backend.run(batch(items=(GenerateItem("r1", "a red cat on a roof", 7 + 2**32),)), RecordingControl())
    assert other.image != full_run.image


def test_a_seed_below_two_to_the_32_starts_from_torchs_noise_for_it(pipe, full_run):
    # its image made before seeds took every bit: the pipeline run alone, with torch's generator seeded so
    alone = diffusers_image(pipe, "a red cat on a roof", STEPS, seed=7)
    assert np.array_equal(np.asarray(alone), np.asarray(decode(full_run.image)))


@pytest.mark.parametrize("level", [0, 8])
def test_a_negative_prompt_steers_the_steps_run_and_the_same_one_gives_the_same_image(
    backend, full_run, unet_calls, level
):
    latent = full_run.by_level()[level] if level else None

    def run(negative: str | None) -> ItemDone:
        item = GenerateItem("r1", "a red cat on a roof", 7, latent, negative_prompt=negative)
        (done,) = backend.run(batch(level=level, items=(item,)), RecordingControl())
        assert isinstance(done, ItemDone)
        return done

    plain, steered, again = run(None), run("blurry, dark, low quality"), run("blurry, dark, low quality")
    assert steered.image != plain.image and steered.image == again.image
    assert unet_calls.count == 3 * (STEPS - level)  # as many steps as without one
    if not level:
        assert plain.image == full_run.image
        assert not np.array_equal(steered.by_level()[4], full_run.by_level()[4])


def test_guidance_at_or_below_one_is_off(backend):
    """As docs/http-api.md says: the prompt alone steers each step, 0 and 1 make the same image, and a negative prompt
    changes nothing."""

    def image(guidance: float, negative: str | None = None) -> bytes:
        item = GenerateItem("r", "a red cat on a roof", 7, negative_prompt=negative)
        (done,) = backend.run(replace(batch(items=(item,), steps=3), guidance_scale=guidance), RecordingControl())
        return done.image

    off = image(1.0)
    assert image(0.0) == off and image(1.0, "blurry, dark") == off and image(0.5, "blurry, dark") == off
    assert image(1.5) != off


def test_aborting_every_item_stops_early(backend, unet_calls):
    items = (GenerateItem("a", "one", 1), GenerateItem("b", "two", 2))
    control = RecordingControl(abort_ids=("a", "b"), abort_after=3)
    outcomes = backend.run(batch(items=items), control)
    assert outcomes == [ItemCancelled("a"), ItemCancelled("b")]
    assert unet_calls.count == 3 < STEPS


def test_a_worker_stopping_after_the_last_step_still_answers_the_images_it_made(backend, unet_calls, monkeypatch):
    """SIGTERM while the images are encoded: before, they were answered cancelled and made again elsewhere."""
    control = RecordingControl()

    def encode_as_the_stop_comes(image, output_format, compression):
        control.stopping = True
        return encode_image(image, output_format, compression)

    monkeypatch.setattr(diffusion_backend, "encode_image", encode_as_the_stop_comes)
    items = (GenerateItem("a", "one", 1), GenerateItem("b", "two", 2))
    outcomes = backend.run(batch(items=items), control)
    assert control.stopping and [type(o) for o in outcomes] == [ItemDone, ItemDone]
    assert unet_calls.count == STEPS


@pytest.mark.parametrize("level", [0, 8])
def test_a_worker_stopping_during_the_last_step_answers_the_images_it_made(backend, full_run, unet_calls, level):
    """SIGTERM during the last UNet evaluation: every step was done and only the decode was left, and the images were
    answered cancelled, to be made again elsewhere from their first step."""
    latent = full_run.by_level()[level] if level else None
    items = (GenerateItem("a", "one", 1, latent), GenerateItem("b", "two", 2, latent))
    control = RecordingControl(stop_after=STEPS - level)
    outcomes = backend.run(batch(level=level, items=items), control)
    assert control.stopping and [type(o) for o in outcomes] == [ItemDone, ItemDone]
    assert [o.steps_run for o in outcomes] == [STEPS - level] * 2
    assert unet_calls.count == STEPS - level


def test_a_worker_stopping_before_the_last_step_stops_at_the_next(backend, unet_calls):
    items = (GenerateItem("a", "one", 1), GenerateItem("b", "two", 2))
    outcomes = backend.run(batch(items=items), RecordingControl(stop_after=STEPS - 1))
    assert outcomes == [ItemCancelled("a"), ItemCancelled("b")]
    assert unet_calls.count == STEPS - 1


def test_a_batch_the_engine_cancels_during_its_last_step_is_not_decoded(backend, unet_calls, monkeypatch):
    def no_decode(*_: object) -> None:
        raise AssertionError("decoded images nobody waits for")

    monkeypatch.setattr(diffusion_backend, "encode_image", no_decode)
    items = (GenerateItem("a", "one", 1), GenerateItem("b", "two", 2))
    outcomes = backend.run(batch(items=items), RecordingControl(abort_ids=("a", "b"), abort_after=STEPS))
    assert outcomes == [ItemCancelled("a"), ItemCancelled("b")]
    assert unet_calls.count == STEPS


def test_batch_aborted_before_it_starts_runs_nothing(backend, unet_calls):
    control = RecordingControl(abort_ids=("r1",))
    assert backend.run(batch(), control) == [ItemCancelled("r1")]
    assert unet_calls.count == 0


def test_aborting_one_item_keeps_the_other(backend, unet_calls):
    items = (GenerateItem("a", "one", 1), GenerateItem("b", "two", 2))
    control = RecordingControl(abort_ids=("a",), abort_after=3)
    cancelled, done = backend.run(batch(items=items), control)
    assert cancelled == ItemCancelled("a")
    assert isinstance(done, ItemDone) and done.request_id == "b"
    assert unet_calls.count == STEPS


def test_batch_of_two_prompts_including_unicode(backend, full_run, unet_calls):
    latent = full_run.by_level()[8]
    items = (
        GenerateItem("a", "a lighthouse at dusk, oil painting", 1, latent),
        GenerateItem("b", "東京の夜景 🌃 — ñandú, naïve café", 2, latent),
    )
    outcomes = backend.run(batch(level=8, items=items), RecordingControl())
    assert [o.request_id for o in outcomes] == ["a", "b"]
    assert all(isinstance(o, ItemDone) for o in outcomes)
    assert outcomes[0].image != outcomes[1].image
    assert unet_calls.count == STEPS - 8  # one UNet call per step for the whole batch


def test_a_prompt_past_77_tokens_runs_and_is_not_logged(backend, full_run):
    """Diffusers logged the cut-off part of every long prompt at WARNING, twice: users' words in the worker's log.
    And transformers warned, once per tokenizer, that such a prompt "will result in indexing errors": SD-XL cuts it
    at 77 tokens, so a user looked for a fault that was not there."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logs = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    for log in logs:
        log.addHandler(handler)
    try:
        item = GenerateItem("r", "a lighthouse at dusk, " * 200 + "secret words", 3, full_run.by_level()[12])
        (done,) = backend.run(batch(level=12, items=(item,)), RecordingControl())
    finally:
        for log in logs:
            log.removeHandler(handler)
    assert isinstance(done, ItemDone) and done.steps_run == STEPS - 12
    assert not [r for r in records if "secret words" in r.getMessage()]
    assert not [r for r in records if "indexing errors" in r.getMessage()]


@pytest.mark.parametrize(("fmt", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_output_formats_decode(backend, full_run, fmt, pil_format):
    item = GenerateItem("r", "a tree", 3, full_run.by_level()[12])
    (done,) = backend.run(batch(level=12, items=(item,), output_format=fmt), RecordingControl())
    assert isinstance(done.image, Blob)
    image = decode(done.image)
    assert (image.format, image.size) == (pil_format, (64, 64))


def test_item_done_crosses_the_wire(full_run):
    # bytes, as ZeroMQ delivers each frame
    frames = [bytes(frame) for frame in worker_side_codec().encode(BatchDone(3, [full_run]))]
    (decoded,) = engine_side_codec().decode(frames).outcomes
    assert isinstance(decoded, ItemDone)
    assert decoded.image == full_run.image
    assert all(np.array_equal(decoded.by_level()[k], full_run.by_level()[k]) for k in LEVELS)


@pytest.mark.parametrize(
    "bad",
    [
        batch(width=32),
        batch(width=260),
        batch(height=100),
        batch(output_format="gif"),
        batch(level=STEPS),
        batch(items=tuple(GenerateItem(str(i), "p", i) for i in range(5))),
        batch(guidance_scale=float("inf")),  # it ran to a black image answered as made
        # past the counts the worker checked its scheduler runs exactly (1 to MAX_STEPS): it ran them all
        batch(steps=MAX_STEPS + 1),
    ],
)
def test_unrunnable_batches_are_refused(backend, unet_calls, bad):
    with pytest.raises(BatchRefused):
        backend.run(bad, RecordingControl())
    assert unet_calls.count == 0


def with_nan(latent: np.ndarray) -> np.ndarray:
    spoilt = latent.astype(np.float32)
    spoilt[0, 0, 0] = np.nan
    return spoilt


@pytest.mark.parametrize(
    ("level", "bad_latent", "why"),
    [
        (8, None, "expected a float16 or float32 latent"),
        (8, np.zeros((4, 4, 4), np.float16), r"shape \(4, 8, 8\)"),
        (8, np.zeros((4, 8, 8), np.uint8), "got uint8"),
        (8, with_nan, "NaN or infinite"),
        (8, np.full((4, 8, 8), np.inf, np.float32), "NaN or infinite"),
        (0, np.zeros((4, 8, 8), np.float16), "a level-0 item takes no latent"),
    ],
)
def test_an_item_whose_latent_cannot_start_a_run_fails_alone(backend, full_run, unet_calls, level, bad_latent, why):
    """A NaN or uint8 latent ran to an image answered as made; a latent of the wrong shape failed every batch-mate."""
    good = full_run.by_level()[8] if level else None
    if callable(bad_latent):
        bad_latent = bad_latent(full_run.by_level()[8])
    items = (GenerateItem("bad", "a dog", 2, bad_latent), GenerateItem("good", "a cat", 1, good))
    failed, done = backend.run(batch(level=level, items=items), RecordingControl())
    assert isinstance(failed, ItemFailed) and failed.request_id == "bad" and failed.code == REFUSED
    assert re.search(why, failed.message)
    assert isinstance(done, ItemDone) and done.request_id == "good" and done.steps_run == STEPS - level
    assert unet_calls.count == STEPS - level  # one run, for the good item alone


def test_describe(backend):
    info = backend.describe()
    assert (info.name, info.device, info.simulated, info.levels) == ("tiny", "cpu", False, LEVELS)
    assert (info.default_steps, info.max_batch) == (STEPS, 4)
    assert (info.min_size, info.max_size, info.default_size) == (64, 256, 64)


def test_load_sdxl_needs_a_local_checkpoint_directory(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_sdxl(str(missing), "cpu")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_sdxl(str(tmp_path), "cpu")


def test_a_folder_of_fp16_weights_only_loads(tmp_path):
    """A download of SD-XL's *.fp16.safetensors alone (half the size) failed every worker's start: diffusers loads
    those files only when told the variant."""
    build_tiny_sdxl(seed=0).to(torch.float16).save_pretrained(tmp_path, variant="fp16")
    assert not list(tmp_path.glob("*/diffusion_pytorch_model.safetensors"))
    loaded = load_sdxl(str(tmp_path), "cpu")
    assert loaded.describe().name == "sdxl"


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this host has an MPS device")
@pytest.mark.parametrize(("device", "says"), [("cuda:99", "torch sees "), ("mps", "torch has no MPS device")])
def test_a_device_this_host_lacks_fails_the_worker_in_one_line_before_the_model_loads(device, says, capsys):
    """Such a worker loaded its model (minutes, for SD-XL), then died with a traceback, exit 1."""
    assert main([*WORKER, "--backend", "tiny", "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"argus worker: error: --device {device}: {says}") and "Traceback" not in err


def test_a_model_whose_scheduler_is_refused_fails_its_worker_in_one_line(pipe, tmp_path, capsys):
    with_scheduler(pipe, HeunDiscreteScheduler).save_pretrained(tmp_path)
    assert main([*WORKER, "--backend", "sdxl", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("argus worker: error: --model ") and "Traceback" not in err
    # said of the model alone: it would fail so on any device
    assert f"--model {tmp_path} cannot serve: HeunDiscreteScheduler does not run one timestep per step" in err


@pytest.mark.parametrize(
    ("scheduler_class", "config", "says"),
    [
        (FlowMatchEulerDiscreteScheduler, {}, "has no attribute 'init_noise_sigma'"),
        (EulerAncestralDiscreteScheduler, {"prediction_type": "sample"}, "prediction_type not implemented yet: sample"),
    ],
)
def test_a_model_whose_scheduler_cannot_step_is_refused_as_it_loads(pipe, tmp_path, scheduler_class, config, says):
    """Such a folder loaded, its worker said hello, and every batch the engine sent it failed in the scheduler."""
    with_scheduler(pipe, scheduler_class, **config).save_pretrained(tmp_path)
    with pytest.raises(BackendUnavailable) as refused:
        load_sdxl(str(tmp_path), "cpu")
    said = str(refused.value)
    assert said.startswith(f"--model {tmp_path} cannot serve: {scheduler_class.__name__} cannot step an SD-XL run")
    assert says in said


def diffusers_image(pipe, prompt: str, steps: int, seed: int) -> Image.Image:
    """The 64x64 image diffusers makes for `seed`: the pipeline called alone, torch's generator seeded with it."""
    return pipe(
        prompt=[prompt],
        num_inference_steps=steps,
        guidance_scale=5.0,
        width=64,
        height=64,
        generator=[torch.Generator("cpu").manual_seed(seed)],
    ).images[0]


def with_scheduler(pipe, scheduler_class, **config: object) -> StableDiffusionXLPipeline:
    """The same weights under another scheduler (of `config` changed), as an SD-XL checkpoint may ship."""
    scheduler = scheduler_class.from_config({**pipe.scheduler.config, **config})
    return StableDiffusionXLPipeline(**{**pipe.components, "scheduler": scheduler})


@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, DDPMScheduler])
def test_resume_with_a_scheduler_that_keeps_no_step_index(pipe, unet_calls, scheduler_class):
    """DDIM and DDPM step by the timestep's value and have no begin index to set: a resumed batch failed."""
    other = DiffusionBackend(
        with_scheduler(pipe, scheduler_class),
        "tiny",
        "cpu",
        "tiny:test",
        levels=LEVELS,
        default_steps=STEPS,
        **tiny_sizes(),
    )
    (full,) = other.run(batch(), RecordingControl())
    unet_calls.count = 0
    item = GenerateItem("r2", "a blue dog in the snow", 11, full.by_level()[8])
    (done,) = other.run(batch(level=8, items=(item,)), RecordingControl())
    assert isinstance(done, ItemDone) and done.steps_run == STEPS - 8
    assert unet_calls.count == STEPS - 8
    assert sorted(done.by_level()) == [12]


def test_a_scheduler_with_more_timesteps_than_steps_is_refused(pipe):
    # PNDM's Runge-Kutta warm-up adds timesteps: counted as steps, every cached level would be off
    with pytest.raises(ValueError, match="one timestep per step"):
        DiffusionBackend(
            with_scheduler(pipe, PNDMScheduler),
            "tiny",
            "cpu",
            "tiny:test",
            levels=LEVELS,
            default_steps=STEPS,
            **tiny_sizes(),
        )


def test_tiny_weights_depend_only_on_the_seed(pipe):
    rng_state = torch.get_rng_state()
    again, other = build_tiny_sdxl(seed=0), build_tiny_sdxl(seed=1)
    assert torch.equal(torch.get_rng_state(), rng_state)  # caller's RNG untouched
    for name, weight in pipe.unet.state_dict().items():
        assert torch.equal(weight, again.unet.state_dict()[name])
    assert not torch.equal(pipe.unet.conv_in.weight, other.unet.conv_in.weight)
    assert torch.equal(pipe.text_encoder_2.text_projection.weight, again.text_encoder_2.text_projection.weight)


def test_a_model_whose_latents_are_not_sd_xls_shape_is_refused(pipe):
    """The engine checks what it caches against SD-XL's latent shape: a worker making others would have every
    latent it returns dropped, and be sent none."""
    other = StableDiffusionXLPipeline(**pipe.components)
    other.vae_scale_factor = 4  # a VAE of three blocks
    with pytest.raises(ValueError, match="at 1/4 of the image's sides, not SD-XL's 4 at 1/8"):
        DiffusionBackend(other, "tiny", "cpu", "tiny:test", levels=LEVELS, default_steps=STEPS, **tiny_sizes())


@pytest.mark.parametrize("levels", [(4, 8, STEPS), (0, 8), (8, 4), (4, 4)])
def test_levels_outside_the_steps_or_out_of_order_are_refused(pipe, levels):
    """A level at the default step count names the finished image, not a state a neighbour can resume from."""
    with pytest.raises(ValueError, match="levels must be increasing and within"):
        DiffusionBackend(pipe, "tiny", "cpu", "tiny:test", levels=levels, default_steps=STEPS, **tiny_sizes())


def test_an_item_without_a_negative_prompt_in_a_batch_that_has_them_gets_an_empty_one():
    def item(negative: str | None) -> GenerateItem:
        return GenerateItem("r", "a red cat", 1, negative_prompt=negative)

    assert diffusion_backend._negative_prompts([item(None), item(None)]) is None
    assert diffusion_backend._negative_prompts([item("blurry"), item(None)]) == ["blurry", ""]
