"""`argus worker --backend sdxl --model DIR` on a real diffusers folder (the tiny pipeline saved as SD-XL is), broken
as users break theirs: files missing or spoiled, weights that lack a part, parts that each load and do not fit one
another. Each ends in one line and exit 2, before any hello, never a traceback."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from run_controls import NoControl
from tiny_models import empty_weights, keep_weights
from transformers import CLIPTextModel, CLIPTextModelWithProjection
from waiting import wait_for

from engine.cli import build_parser, engine_config, main
from engine_process import ROOT, start_engine
from protocols.worker_messages import Generate, GenerateItem, ItemDone
from workers.backend import BackendUnavailable
from workers.diffusion_backend import StableDiffusionXLPipeline, load_sdxl
from workers.model_folder import sdxl_model_problem, sdxl_part_variant, sdxl_weights_variant
from workers.tiny_pipeline import _build_tokenizer, _text_config, build_tiny_sdxl

# nothing listens there: a worker whose model loads would wait for it, so every case here must fail before
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


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("argus worker: error: "), err
    return last


# a .bin that transformers (for the text encoders) hands to torch.load: the error it raised, which depends on the
# bytes (UnpicklingError, IndexError), ended the worker in a traceback, exit 1
def test_a_text_encoder_bin_that_torch_cannot_load_fails_the_worker_in_one_line(model, capsys):
    _replace(model / "text_encoder" / "model.safetensors", "pytorch_model.bin", b"\x80" * 99)
    assert main([*WORKER, str(model)]) == 2
    line = one_line_error(capsys)
    assert re.match(
        rf"argus worker: error: cannot load an SD-XL pipeline from {re.escape(str(model))}: \w+Error: ", line
    )


def _edit_json(path: Path, **changes: object) -> None:
    """The JSON file with `changes`, a key changed to None left out."""
    config = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps({key: value for key, value in config.items() if value is not None}))


# files that pass the folder checks and do not load, as diffusers, transformers and tokenizers refuse them (each
# error's type differs): (how the folder is spoiled, what the line says after the folder)
NOT_LOADING = {
    "a tokenizer.json of no tokenizer": (
        lambda model: (model / "tokenizer" / "tokenizer.json").write_text("{}"),
        "KeyError: 'added_tokens'",
    ),
    "a tokenizer.json of no known model": (
        lambda model: _edit_json(model / "tokenizer_2" / "tokenizer.json", model={"type": "Nope"}),
        "Exception: data did not match any variant",
    ),
    "a config.json that is not JSON": (
        lambda model: (model / "vae" / "config.json").write_text("{not json"),
        "It looks like the config file at",
    ),
    "a unet config of the wrong shape": (
        lambda model: _edit_json(model / "unet" / "config.json", block_out_channels=[8, 16]),
        "Must provide the same number of `block_out_channels` as `down_block_types`",
    ),
    "a text encoder config value of the wrong type": (
        lambda model: _edit_json(model / "text_encoder" / "config.json", hidden_size="big"),
        "StrictDataclassFieldValidationError: Validation error for field 'hidden_size': TypeError:",
    ),
}


@pytest.mark.parametrize(("spoil", "says"), NOT_LOADING.values(), ids=NOT_LOADING)
def test_a_folder_that_passes_the_checks_and_does_not_load_is_one_line_naming_it(spoil, says, model, capsys):
    line = refusal_of_spoiled(model, spoil, capsys)
    assert line.startswith(f"argus worker: error: cannot load an SD-XL pipeline from {model}: {says}"), line


def refusal_of_spoiled(model: Path, spoil, capsys) -> str:
    """The one line `argus worker` exits 2 with, given the folder `model` once `spoil` has spoiled it in a way the
    file checks pass."""
    spoil(model)
    assert sdxl_model_problem(str(model)) is None
    assert main([*WORKER, str(model)]) == 2
    return one_line_error(capsys)


def _weights(part: str) -> str:
    return f"{part}/{'model' if part.startswith('text_encoder') else 'diffusion_pytorch_model'}.safetensors"


def _copy_weights(model: Path, source: str, target: str) -> None:
    shutil.copy(model / _weights(source), model / _weights(target))


# weights that hold none of a part's tensors, or not all of the UNet's: diffusers and transformers load them without
# error, the text encoders at random (the images answered prompts nobody wrote), the unet and vae with no values
# (every start of the worker failed: "--model DIR cannot serve on cpu: Cannot copy out of meta tensor")
WEIGHTS_MISSING = {
    "a unet file of no tensors": (
        lambda model: empty_weights(model / _weights("unet")),
        "its unet's weights lack 620 of 620 parameters (e.g. up_blocks.0.resnets.0.conv1.weight): the file holds"
        " another model's weights, or none",
    ),
    "a vae file of the unet's tensors": (
        lambda model: _copy_weights(model, "unet", "vae"),
        "its vae's weights lack 244 of 244 parameters (e.g. decoder.mid_block.resnets.0.conv1.weight): the file"
        " holds another model's weights, or none",
    ),
    "a text encoder file of no tensors": (
        lambda model: empty_weights(model / _weights("text_encoder")),
        "its text_encoder's weights lack 52 of 52 parameters (e.g. embeddings.token_embedding.weight): the file holds"
        " another model's weights, or none",
    ),
    "a text encoder file of the vae's tensors": (
        lambda model: _copy_weights(model, "vae", "text_encoder_2"),
        "its text_encoder_2's weights lack 53 of 53 parameters (e.g. text_model.embeddings.token_embedding.weight):"
        " the file holds another model's weights, or none",
    ),
    "a unet without its first convolution": (
        lambda model: keep_weights(model / _weights("unet"), lambda name: not name.startswith("conv_in.")),
        "its unet's weights lack 2 of 620 parameters (under 0.1% of the values, e.g. conv_in.weight): the model"
        " cannot run without them",
    ),
}


@pytest.mark.parametrize(("spoil", "says"), WEIGHTS_MISSING.values(), ids=WEIGHTS_MISSING)
def test_weights_that_lack_a_part_are_one_line_naming_the_part(spoil, says, model, capsys):
    line = refusal_of_spoiled(model, spoil, capsys)
    assert line == f"argus worker: error: cannot load an SD-XL pipeline from {model}: {says}"


def test_a_text_encoder_without_its_projection_loads_with_a_warning(model, caplog):
    """transformers starts a missing head at random, as before; the warning says which."""
    keep_weights(model / _weights("text_encoder_2"), lambda name: name != "text_projection.weight")
    with caplog.at_level(logging.WARNING, logger="argus.models"):
        assert load_sdxl(str(model), "cpu").describe().name == "sdxl"
    assert [r.getMessage() for r in caplog.records if r.name == "argus.models"] == [
        f"the weights in {model / 'text_encoder_2'} lack 1 of 53 parameters (2.0% of the values:"
        " text_projection.weight), which start at random"
    ]


def test_a_bug_in_loading_keeps_its_traceback(saved, monkeypatch):
    """Only what the libraries raise about a folder's files is said as a usage error: every exception was, and a bug
    in the worker's own code came out as one line about the user's model."""

    def broken(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'config'")

    monkeypatch.setattr(StableDiffusionXLPipeline, "from_pretrained", broken)
    with pytest.raises(AttributeError, match="no attribute 'config'"):
        load_sdxl(str(saved), "cpu")


@pytest.fixture(scope="module", autouse=True)
def profiling_a_model_that_does_not_load(saved, tmp_path_factory):
    """`argus profile latency` of a model that does not load, started with the module: its worker imports torch and
    diffusers, for seconds, beside the other tests."""
    folder = tmp_path_factory.mktemp("profile")
    model = Path(shutil.copytree(saved, folder / "model"))
    NOT_LOADING["a tokenizer.json of no tokenizer"][0](model)
    command = [sys.executable, "-m", "engine.cli", "profile", "latency", "--backend", "sdxl", "--model", str(model)]
    command += ["--out", str(folder / "l.json")]
    profile = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield profile, model
    profile.kill()
    profile.wait()


def test_profile_latency_says_why_its_worker_cannot_load_the_model(profiling_a_model_that_does_not_load):
    """The profile's worker exited saying so in the profile's log, and the profile ended in a RuntimeError
    traceback quoting it."""
    profile, model = profiling_a_model_that_does_not_load
    try:
        _, err = profile.communicate(timeout=240)
    finally:
        profile.kill()
    assert profile.returncode == 2, err
    assert (
        err == f"argus profile latency: error: cannot load an SD-XL pipeline from {model}: KeyError: 'added_tokens'\n"
    )


@pytest.fixture(scope="module", autouse=True)
def serving_a_model_that_does_not_load(saved, tmp_path_factory):
    """An engine whose one local worker cannot load its model, started with the module: the three starts of its
    worker (each imports torch and diffusers, for seconds, and waits its backoff before) run beside the other tests,
    and test_serve_says_once_why_its_workers_cannot_load_the_model reads what the engine said."""
    folder = tmp_path_factory.mktemp("serve")
    model = Path(shutil.copytree(saved, folder / "model"))
    NOT_LOADING["a tokenizer.json of no tokenizer"][0](model)
    engine = start_engine(folder, "--model", str(model), workers=1, backend="sdxl", wait=False)
    yield engine, model
    engine.stop()


def test_serve_says_once_why_its_workers_cannot_load_the_model(serving_a_model_that_does_not_load):
    """Each local worker printed its error at each of its three starts, among its load's progress bars, and the
    engine said only "its error is above". One slot's three starts (test_launcher checks that two slots say it once
    too): each start of an sdxl worker imports torch and diffusers, for seconds."""
    engine, model = serving_a_model_that_does_not_load
    try:
        given_up = "given up; trying it again every"
        wait_for(lambda: given_up in engine.log_path.read_text() or engine.process.poll() is not None, 240)
        assert given_up in engine.log_path.read_text(), engine.log()
    finally:
        engine.stop()
    log = engine.log_path.read_text()
    reason = f"cannot load an SD-XL pipeline from {model}: KeyError: 'added_tokens'"
    assert log.count(reason) == 1, log
    assert re.search(
        rf"ERROR argus.launcher\[\d+\]: worker local-0 cannot serve as configured: {re.escape(reason)}\n", log
    )
    assert "argus worker: error" not in log and "Traceback" not in log


# safetensors files cut short or overwritten: found only as the worker loaded them (after torch's import), and in
# the text encoders in an error naming no file ("SafetensorError: Error while deserializing header: ...")
DAMAGED_SAFETENSORS = {
    "truncated": ("text_encoder/model.safetensors", lambda path: _cut(path, 400_000), "bytes where its header"),
    "empty": ("text_encoder_2/model.safetensors", lambda path: _cut(path, 0), "0 bytes, too few for its header"),
    "a tail added": ("unet/diffusion_pytorch_model.safetensors", lambda path: _add(path, b"\0"), "where its header"),
    # its header's length read whole, the header itself cut: read as far as the file went, it was no JSON
    "cut in its header": (
        "unet/diffusion_pytorch_model.safetensors",
        lambda path: _cut(path, 4 + int.from_bytes(path.read_bytes()[:8], "little")),
        "too few for its header",
    ),
    "not one": (
        "vae/diffusion_pytorch_model.safetensors",
        lambda path: path.write_bytes(b"\x05" + b"\0" * 7 + b"[1,2]"),
        "its header is not one",
    ),
}


@pytest.mark.parametrize(("file", "spoil", "says"), DAMAGED_SAFETENSORS.values(), ids=DAMAGED_SAFETENSORS)
def test_a_damaged_safetensors_file_is_named_before_anything_loads(file, spoil, says, model, capsys):
    spoil(model / file)
    assert main([*WORKER, str(model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"argus worker: error: --model: {model / file} is damaged (") and says in err


def _add(path: Path, data: bytes) -> None:
    path.write_bytes(path.read_bytes() + data)


def _cut(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def _replace(path: Path, name: str, data: bytes) -> None:
    path.unlink()
    (path.parent / name).write_bytes(data)


# what this user cannot read, relative to the model folder, and the mode that makes it so
UNREADABLE = {
    "the folder": ("", 0),
    "vae": ("vae", 0),
    "unet/diffusion_pytorch_model.safetensors": ("unet/diffusion_pytorch_model.safetensors", 0),
    "tokenizer/tokenizer.json": ("tokenizer/tokenizer.json", 0),
    # listed, not entered: none of its files can be opened
    "a folder it lists and cannot enter": ("vae", 0o644),
}


@pytest.mark.parametrize(("part", "unreadable"), UNREADABLE.values(), ids=UNREADABLE)
def test_a_part_this_user_cannot_read_is_named_before_anything_loads(part, unreadable, model):
    """The folder itself was reported as holding no model_index.json, a subfolder as holding no config.json, and a
    file as a load failure after torch had been imported (for each local worker of `argus serve`)."""
    target = model / part
    mode = target.stat().st_mode
    target.chmod(unreadable)
    try:
        done = subprocess.run(
            [*_without_root_override(), sys.executable, "-m", "engine.cli", *WORKER, str(model)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        target.chmod(mode)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"argus worker: error: --model: {target} cannot be read by this user (uid {os.getuid()}): permission denied"
    )


def _without_root_override() -> list[str]:
    """A prefix under which root, as a user is, is refused what its file modes refuse: it drops the capabilities
    that let it read anything."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root reads every file, and setpriv (util-linux), which would make it not, is missing")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


# loaded, the first two made a tokenizer of 2 tokens that read every prompt alike (images made, all of one prompt);
# the last one of no length limit, which failed every batch (OverflowError) after the worker said hello
TOKENIZER_BROKEN = {
    "empty": ("tokenizer", ["tokenizer.json", "tokenizer_config.json"], "holds no tokenizer_config.json"),
    "no vocabulary": ("tokenizer", ["tokenizer.json"], "holds no vocabulary: tokenizer.json, or vocab.json and"),
    "no tokenizer_config.json": ("tokenizer_2", ["tokenizer_config.json"], "holds no tokenizer_config.json"),
}


@pytest.mark.parametrize(("folder", "removed", "says"), TOKENIZER_BROKEN.values(), ids=TOKENIZER_BROKEN)
def test_a_tokenizer_folder_without_its_files_is_refused(folder, removed, says, model, capsys):
    for name in removed:
        (model / folder / name).unlink()
    assert (sdxl_model_problem(str(model)) or "").startswith(f"{model / folder} {says}")
    assert main([*WORKER, str(model)]) == 2
    assert capsys.readouterr().err.startswith(f"argus worker: error: --model: {model / folder} {says}")


def test_a_scheduler_folder_without_its_config_is_refused_before_anything_loads(model, capsys):
    """diffusers reads it after every part with weights: the worker loaded the UNet (minutes, for SD-XL) and failed,
    and `argus serve` started, each of its workers doing so three times."""
    (model / "scheduler" / "scheduler_config.json").unlink()
    assert main([*WORKER, str(model)]) == 2
    assert capsys.readouterr().err == (
        f"argus worker: error: --model: {model / 'scheduler'} holds no scheduler_config.json\n"
    )


def test_a_link_to_nothing_is_named_as_such(model, capsys):
    """A hub cache's snapshot links each file to a blob, which an interrupted download never wrote: such a link was
    reported as a file this user may not read."""
    weights = model / "text_encoder" / "model.safetensors"
    weights.unlink()
    weights.symlink_to("../../blobs/4f2a")
    assert main([*WORKER, str(model)]) == 2
    assert (
        capsys.readouterr().err
        == f"argus worker: error: --model: {weights} links to ../../blobs/4f2a, which does not exist\n"
    )


def test_a_hub_cache_folder_names_the_checkpoint_it_holds(saved, tmp_path, capsys):
    """`huggingface-cli download` keeps a model in models--ORG--NAME/snapshots/REVISION: the folder above was refused
    as no diffusers checkpoint, though the checkpoint is in it."""
    cache = tmp_path / "models--stabilityai--stable-diffusion-xl-base-1.0"
    snapshot = cache / "snapshots" / "462165984030d82259a11f4367a4eed129e94a7b"
    shutil.copytree(saved, snapshot)
    (cache / "refs").mkdir()
    assert main([*WORKER, str(cache)]) == 2
    assert capsys.readouterr().err == (
        f"argus worker: error: --model: {str(cache)!r} is a hub cache folder: pass the checkpoint it holds,"
        f" --model {snapshot}\n"
    )


def test_a_unet_of_fp16_shards_only_loads_beside_plain_parts(model, tmp_path):
    """diffusers names an fp16 variant's shards diffusion_pytorch_model.fp16-00001-of-0000N.safetensors, and their
    index diffusion_pytorch_model.safetensors.index.fp16.json: such a unet was taken for plain weights beside plain
    text encoders, the variant was not asked for, and the worker failed ("no file named
    diffusion_pytorch_model.bin")."""
    build_tiny_sdxl(seed=0).unet.to(torch.float16).save_pretrained(
        tmp_path / "unet", max_shard_size="10MB", variant="fp16"
    )
    shutil.rmtree(model / "unet")
    shutil.move(tmp_path / "unet", model / "unet")
    assert {path.name for path in (model / "unet").iterdir()} >= {
        "diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "diffusion_pytorch_model.safetensors.index.fp16.json",
    }
    assert sdxl_model_problem(str(model)) is None
    assert load_sdxl(str(model), "cpu").describe().name == "sdxl"


# -- parts that each load and do not fit one another (workers/pipeline_fit.py): the worker loaded such a folder, said
# hello and failed every batch (500 `worker_error` for each request); it now refuses it in one line, exit 2, before
# any hello


def _replace_part(model: Path, part: str, made) -> None:
    """Saves `made` (a model of its own, which loads alone) as the folder's `part`."""
    shutil.rmtree(model / part)
    made.save_pretrained(model / part)


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
    (done,) = backend.run(batch, NoControl())
    assert isinstance(done, ItemDone)


def test_weights_saved_as_bin_load_without_an_error_logged(tmp_path, caplog):
    """diffusers logged, at every worker's start, "An error occurred while trying to fetch DIR/unet: Error no file
    named diffusion_pytorch_model.safetensors" at ERROR for a unet and a vae saved as .bin, which it then loaded."""
    build_tiny_sdxl(seed=0).save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.bin").is_file()
    with caplog.at_level(logging.WARNING, logger="diffusers"):
        assert load_sdxl(str(tmp_path), "cpu").describe().name == "sdxl"
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# an engine whose workers are all started by hand, on hosts of their own
_SERVE_ELSEWHERE = ["serve", "--backend", "sdxl", "--workers", "0", "--model"]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda path: None, "is no folder on this host"),
        (lambda path: path.mkdir(), "is not an SD-XL model on this host ("),
    ],
    ids=["missing", "no model"],
)
def test_serve_without_local_workers_warns_once_of_a_model_not_here(make, says, tmp_path, caplog):
    """Not refused (workers started by hand on other hosts may hold the folder), but a mistyped --model was taken
    without a word, listed by GET /v1/models, and failed each worker that came to load it."""
    folder = tmp_path / "typo"
    make(folder)
    with caplog.at_level(logging.WARNING, logger="argus"):
        engine_config(build_parser().parse_args([*_SERVE_ELSEWHERE, str(folder)]))
    [warning] = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert warning.startswith(f"--model {folder} {says}")
    assert "\n" not in warning
    assert "workers started elsewhere" in warning and "GET /v1/models lists it as 'typo'" in warning


def test_serve_without_local_workers_takes_a_model_found_here_without_a_word(saved, caplog):
    with caplog.at_level(logging.WARNING, logger="argus"):
        engine_config(build_parser().parse_args([*_SERVE_ELSEWHERE, str(saved)]))
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_a_hub_cache_folder_of_two_revisions_names_both(tmp_path):
    """The folder above it may hold what glob reads as a pattern ("models [old]": one of o, l, d)."""
    cache = tmp_path / "models [old]" / "models--stabilityai--stable-diffusion-xl-base-1.0"
    for revision in ("1a", "2b"):
        (cache / "snapshots" / revision).mkdir(parents=True)
        (cache / "snapshots" / revision / "model_index.json").write_text("{}")
    assert sdxl_model_problem(str(cache)) == (
        f"{str(cache)!r} is a hub cache folder: pass the checkpoint it holds,"
        f" --model {cache / 'snapshots' / '1a'} or {cache / 'snapshots' / '2b'}"
    )


def test_hidden_files_are_not_checked(model):
    """A download's lock left in its .cache/, an editor's swap file: nothing loads them (nor does workers/model_id.py
    read them)."""
    (model / "unet" / ".cache").mkdir()
    (model / "unet" / ".cache" / "diffusion_pytorch_model.lock").symlink_to("../../blobs/gone")
    (model / "vae" / ".config.json.swp").symlink_to("gone")
    assert sdxl_model_problem(str(model)) is None


def test_a_text_encoder_of_fp16_weights_only_is_loaded_as_that_variant_and_the_other_parts_plain(model):
    (model / "text_encoder" / "model.safetensors").rename(model / "text_encoder" / "model.fp16.safetensors")
    assert sdxl_model_problem(str(model)) is None
    assert sdxl_weights_variant(str(model)) == "fp16"
    parts = ("unet", "vae", "text_encoder", "text_encoder_2")
    assert [sdxl_part_variant(str(model), part) for part in parts] == [None, None, "fp16", None]


def test_a_config_that_is_not_a_json_object_is_refused(model):
    (model / "unet" / "config.json").write_text("[4]")
    assert sdxl_model_problem(str(model)) == f"{model / 'unet' / 'config.json'}: not a JSON object"


def test_a_byte_pair_vocabulary_without_its_merges_is_refused(model):
    """vocab.json alone makes no CLIP tokenizer: its merges say how a word splits into the vocabulary's tokens."""
    (model / "tokenizer" / "tokenizer.json").rename(model / "tokenizer" / "vocab.json")
    assert sdxl_model_problem(str(model)) == (
        f"{model / 'tokenizer'} holds no vocabulary: tokenizer.json, or vocab.json and merges.txt"
    )


def test_a_scheduler_config_naming_another_class_than_model_index_is_said(model, caplog):
    """diffusers makes the scheduler model_index.json names, from scheduler_config.json's settings: a folder whose
    scheduler_config.json was edited to DPM-Solver ran Euler, and nothing said so."""
    _edit_json(model / "scheduler" / "scheduler_config.json", _class_name="DPMSolverMultistepScheduler")
    with caplog.at_level(logging.WARNING, logger="argus.models"):
        load_sdxl(str(model), "cpu")
    assert [r.getMessage() for r in caplog.records if r.name == "argus.models"] == [
        f"{model / 'scheduler' / 'scheduler_config.json'} names DPMSolverMultistepScheduler, and the folder's"
        " model_index.json EulerDiscreteScheduler: diffusers runs EulerDiscreteScheduler, with the settings it"
        " shares; make them agree to run DPMSolverMultistepScheduler"
    ]


@pytest.mark.parametrize("parent", ["models", "models--org--sdxl/snapshots"])
def test_a_folder_of_checkpoints_names_them(parent, tmp_path, capsys):
    """The folder of one's models, or a hub cache's snapshots/ (a level below the cache folder, which is named so
    already): said to hold no model_index.json, it was taken for no checkpoint at all."""
    folder = tmp_path / parent
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        (folder / name / "model_index.json").write_text("{}")
    assert main([*WORKER, str(folder)]) == 2
    assert capsys.readouterr().err == (
        f"argus worker: error: --model: {str(folder)!r} holds no model_index.json; its subfolders do: pass one,"
        f" --model {folder / 'a'} or {folder / 'b'}\n"
    )
