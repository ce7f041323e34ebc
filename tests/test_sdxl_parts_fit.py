"""An SD-XL folder whose parts each load but do not fit one another (workers/pipeline_fit.py): the worker loaded it,
said hello and failed every batch (500 `worker_error` for each request); it now refuses it in one line, exit 2,
before any hello."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from engine.cli import main
from protocols.worker_messages import Generate, GenerateItem, ItemDone
from workers.backend import BackendUnavailable
from workers.diffusion_backend import load_sdxl
from workers.model_folder import sdxl_model_problem
from workers.tiny_pipeline import _build_tokenizer, _text_config, build_tiny_sdxl

# nothing listens there: a worker whose model loads would wait for it
WORKER = ["worker", "--connect", "tcp://127.0.0.1:9", "--backend", "sdxl", "--model"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sdxl") / "model"
    build_tiny_sdxl(seed=0).save_pretrained(folder)
    return folder


@pytest.fixture
def model(saved, tmp_path) -> Path:
    """A copy of the saved folder, for a test to break."""
    return Path(shutil.copytree(saved, tmp_path / "model"))


def _replace_part(model: Path, part: str, made) -> None:
    """Saves `made` (a model of its own, which loads alone) as the folder's `part`."""
    shutil.rmtree(model / part)
    made.save_pretrained(model / part)


def _edit_json(path: Path, **changes: object) -> None:
    config = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps({key: value for key, value in config.items() if value is not None}))


def _unet(model: Path, **changes: object) -> UNet2DConditionModel:
    """A unet of the folder's config but for `changes`."""
    return UNet2DConditionModel.from_config({**json.loads((model / "unet" / "config.json").read_text()), **changes})


def _vae(model: Path, **changes: object) -> AutoencoderKL:
    return AutoencoderKL.from_config({**json.loads((model / "vae" / "config.json").read_text()), **changes})


def _text_encoder(model_class, width: int, **extra: int):
    return model_class(_text_config(_build_tokenizer(), width, **extra))


# (how the folder is spoiled, what the refusal says after "--model DIR cannot serve: "), each as the pipeline
# failed at its first batch before: a RuntimeError, a ValueError, an OverflowError or a TypeError from its depths
MISFITS = {
    "a text encoder of another width": (
        lambda model: _replace_part(model, "text_encoder", _text_encoder(CLIPTextModel, 32)),
        "its unet attends to text of 112 values a token (cross_attention_dim), and its text encoders give 96"
        " (text_encoder 32 + text_encoder_2 64)",
    ),
    "a second text encoder of another projection": (
        lambda model: _replace_part(
            model, "text_encoder_2", _text_encoder(CLIPTextModelWithProjection, 64, projection_dim=32)
        ),
        "its unet takes 160 values of size conditioning and pooled text (projection_class_embeddings_input_dim), and"
        " the pipeline gives 128 (6 size ids of 16 + text_encoder_2's projection_dim 32)",
    ),
    "a unet without SD-XL's size conditioning": (
        lambda model: _replace_part(model, "unet", _unet(model, addition_embed_type=None)),
        "its unet takes no SD-XL size conditioning (addition_embed_type None)",
    ),
    "a vae of 16 latent channels": (
        lambda model: _replace_part(model, "vae", _vae(model, latent_channels=16)),
        "its unet takes latents of 4 channels; its vae makes 16, its unet gives 4",
    ),
    "a unet of 8 output channels": (
        lambda model: _replace_part(model, "unet", _unet(model, out_channels=8)),
        "its unet takes latents of 4 channels; its vae makes 4, its unet gives 8",
    ),
    "a tokenizer_config.json of no model_max_length": (
        lambda model: _edit_json(model / "tokenizer" / "tokenizer_config.json", model_max_length=None),
        "its tokenizer/tokenizer_config.json sets no model_max_length (no limit, to transformers), and its"
        " text_encoder has 77 positions: set it to 77",
    ),
    "a tokenizer longer than its text encoder": (
        lambda model: _edit_json(model / "tokenizer_2" / "tokenizer_config.json", model_max_length=100),
        "its tokenizer_2 pads prompts to 100 tokens (model_max_length), and its text_encoder_2 has 77 positions",
    ),
}


@pytest.mark.parametrize(("spoil", "says"), MISFITS.values(), ids=MISFITS)
def test_parts_that_do_not_fit_are_refused_as_the_model_loads(spoil, says, model):
    spoil(model)
    assert sdxl_model_problem(str(model)) is None  # every file is there, and each part loads
    with pytest.raises(BackendUnavailable) as refused:
        load_sdxl(str(model), "cpu")
    assert str(refused.value) == f"--model {model} cannot serve: {says}"


@pytest.mark.timeout(120)  # the old worker loaded such a folder, and waited for an engine at the address for ever
def test_the_worker_says_so_in_one_line_and_exits_2(model, capsys):
    spoil, says = MISFITS["a text encoder of another width"]
    spoil(model)
    assert main([*WORKER, str(model)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"argus worker: error: --model {model} cannot serve: {says}"


def test_parts_that_fit_still_load_and_run(saved):
    """The check refuses none of the pipelines that ran: SD-XL's own shape, the tiny model's."""
    backend = load_sdxl(str(saved), "cpu")
    batch = Generate(1, 0, 1, 512, 512, 5.0, "png", [GenerateItem("r", "a red fox " * 40, 1)])
    (done,) = backend.run(batch, _Unaborted())
    assert isinstance(done, ItemDone)


class _Unaborted:
    def between_steps(self) -> None:
        pass

    def is_aborted(self, request_id: str) -> bool:
        return False

    def cancelled(self, request_id: str) -> bool:
        return False
