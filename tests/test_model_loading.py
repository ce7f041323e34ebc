"""A model folder that passes the file checks (workers/model_folder.py) and still does not load is one line naming the
folder and what failed, exit 2, wherever a command names one: each ended in a traceback from transformers, after
seconds of imports (`argus serve`'s with the engine started). tests/model_folders.py makes such folders: their
tokenizer.json holds no tokenizer. Real tiny models (tests/tiny_models.py) whose weights hold none of the model's
tensors loaded without error, all at random. The sdxl worker's, and what `argus serve` says of its workers, are in
tests/test_sdxl_model_folder.py."""

from __future__ import annotations

import json
import logging
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from command_names import command_name
from huggingface_hub.errors import StrictDataclassFieldValidationError
from model_folders import save_model_folder
from safetensors import SafetensorError
from tiny_models import empty_weights, keep_weights, save_tiny_bert, save_tiny_clip, save_tiny_clip_text

from engine.cache.embedders import make_embedder
from engine.cli import main
from engine_process import start_engine
from workers.model_loading import ModelLoadFailed, load_pretrained, loading

# what each folder is loaded as, and the model type its config.json names
KINDS = {
    "clip": ("a CLIP text encoder", "clip_text_model"),
    "minilm": ("a MiniLM model", "bert"),
    "whole clip": ("a CLIP model", "clip"),
}


@pytest.fixture
def folders(tmp_path) -> dict[str, str]:
    """A folder of each kind, which passes the checks and does not load."""
    return {
        kind: save_model_folder(tmp_path / kind.replace(" ", "-"), model_type, processor=kind == "whole clip")
        for kind, (_, model_type) in KINDS.items()
    }


def says(kind: str, folder: str) -> str:
    return f"cannot load {KINDS[kind][0]} from {folder}: KeyError: 'added_tokens'"


CALIBRATE = ["calibrate", "--prompts", "{prompts}"]
PROFILE = ["profile", "quality", "{prompts}", "--clip", "{whole clip}", "--out", "{tmp}/q.jsonl"]


COMMANDS = pytest.mark.parametrize(
    ("argv", "kind"),
    [
        pytest.param([*CALIBRATE, "--embedder", "clip", "--model-path", "{clip}"], "clip", id="calibrate clip"),
        pytest.param([*CALIBRATE, "--embedder", "minilm", "--model-path", "{minilm}"], "minilm", id="calibrate minilm"),
        pytest.param(
            [*CALIBRATE, "--embedder", "hash", "--reference", "clip", "--reference-model-path", "{clip}"],
            "clip",
            id="calibrate reference",
        ),
        pytest.param(PROFILE, "whole clip", id="profile quality --clip"),
        pytest.param([*PROFILE, "--embedder", "clip", "--embedder-model", "{clip}"], "clip", id="profile clip"),
        pytest.param([*PROFILE, "--embedder", "minilm", "--embedder-model", "{minilm}"], "minilm", id="profile minilm"),
        pytest.param(
            ["bench", "cache", "--replay", "{prompts}", "--embedder", "clip", "--model-path", "{clip}"],
            "clip",
            id="bench cache",
        ),
    ],
)


@COMMANDS
def test_a_command_says_which_folder_did_not_load_in_one_line(argv, kind, folders, prompts, tmp_path, capsys):
    named = {**folders, "prompts": prompts, "tmp": tmp_path}
    argv = [arg.format(**named) for arg in argv]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"{command_name(argv)}: error: {says(kind, folders[kind])}\n"


SAVERS = {"clip": save_tiny_clip_text, "minilm": save_tiny_bert, "whole clip": save_tiny_clip}
# a tiny model's tensors, and its largest (the one a refusal names)
TENSORS = {
    "clip": (53, "text_model.embeddings.token_embedding.weight"),
    "minilm": (39, "embeddings.position_embeddings.weight"),
    "whole clip": (78, "text_model.embeddings.token_embedding.weight"),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, str]:
    """A real tiny model of each kind, which loads."""
    base = tmp_path_factory.mktemp("models")
    for kind, save in SAVERS.items():
        save(base / kind.replace(" ", "-"))
    return {kind: str(base / kind.replace(" ", "-")) for kind in SAVERS}


def _another_models(kind: str, saved: dict[str, str]) -> str:
    return f"{saved['clip' if kind == 'minilm' else 'minilm']}/model.safetensors"


# weights that hold none of the model's tensors: what transformers loads without error, every tensor at random
NO_TENSORS_OF_THE_MODEL = {
    "no tensors": lambda weights, kind, saved: empty_weights(weights),
    "another model's": lambda weights, kind, saved: shutil.copy(_another_models(kind, saved), weights),
}


@pytest.mark.parametrize("spoil", NO_TENSORS_OF_THE_MODEL.values(), ids=NO_TENSORS_OF_THE_MODEL)
@COMMANDS
def test_a_command_refuses_weights_that_hold_none_of_the_model(argv, kind, spoil, saved, prompts, tmp_path, capsys):
    """The cache's similarities (random embeddings) and CLIP's scores were noise, and nothing said so but
    transformers' load report, among a command's output."""
    folder = shutil.copytree(saved[kind], tmp_path / "spoiled")
    spoil(folder / "model.safetensors", kind, saved)
    named = {**saved, kind: folder, "prompts": prompts, "tmp": tmp_path}
    argv = [arg.format(**named) for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    count, largest = TENSORS[kind]
    assert err.splitlines()[-1] == (
        f"{command_name(argv)}: error: cannot load {KINDS[kind][0]} from {folder}: its weights lack {count} of"
        f" {count} parameters (e.g. {largest}): the file holds another model's weights, or none"
    )
    assert "Traceback" not in err


def test_weights_without_a_tower_are_refused(saved, prompts, tmp_path, capsys):
    """A whole CLIP whose weights hold its text tower only: its scores came from a random vision tower."""
    folder = shutil.copytree(saved["whole clip"], tmp_path / "text-only")
    keep_weights(folder / "model.safetensors", lambda name: not name.startswith("vision_model."))
    assert main(["profile", "quality", prompts, "--clip", str(folder), "--out", str(tmp_path / "q.jsonl")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"argus profile quality: error: cannot load a CLIP model from {folder}: its weights lack 39 of 78 parameters"
        " (34.9% of the values, e.g. vision_model.embeddings.patch_embedding.weight): they would be random numbers"
    )


def test_weights_without_a_head_load_with_a_warning(tmp_path, caplog):
    """A BERT saved without its pooler, which the minilm embedder does not use: transformers starts it at random,
    as it did; the warning names what is random."""
    save_tiny_bert(tmp_path, pooler=False)
    with caplog.at_level(logging.WARNING, logger="argus.models"):
        vectors = make_embedder("minilm", str(tmp_path)).embed(["a red fox", "a blue whale"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("argus")] == [
        (
            "argus.models",
            "WARNING",
            f"the weights in {tmp_path} lack 2 of 39 parameters (3.0% of the values: pooler.dense.weight,"
            " pooler.dense.bias), which start at random",
        )
    ]


def test_serve_says_which_embedder_folder_did_not_load_in_one_line(folders, tmp_path):
    """The engine started, and its embedder's load ended it in a traceback, exit 1."""
    engine = start_engine(tmp_path, "--embedder", "clip", "--embedder-path", folders["clip"], workers=0, wait=False)
    try:
        assert engine.process.wait(120) == 2
    finally:
        engine.stop()
    log = engine.log_path.read_text()
    assert log.endswith(f"argus serve: error: {says('clip', folders['clip'])}\n")
    assert "Traceback" not in log


# what the libraries raise on folders that are not what they read (tests/test_sdxl_model_folder.py has the folders)
FROM_THE_FOLDER = [
    OSError("It looks like the config file at '/m/vae/config.json' is not a valid JSON file."),
    json.JSONDecodeError("Expecting value", "garbage", 0),
    KeyError("added_tokens"),
    IndexError("index out of range"),
    TypeError("'str' object cannot be interpreted as an integer"),
    EOFError(),
    RuntimeError("You set `ignore_mismatched_sizes` to `False`, thus raising an error."),
    SafetensorError("Error while deserializing header: invalid header length"),
    StrictDataclassFieldValidationError("hidden_size", TypeError("Field 'hidden_size' expected int, got str")),
    Exception("data did not match any variant of untagged enum ModelUntagged at line 1 column 872"),  # tokenizers'
]


@pytest.mark.parametrize("error", FROM_THE_FOLDER, ids=lambda error: type(error).__name__)
def test_what_a_loader_raises_about_a_folder_is_said_in_one_line(error):
    with pytest.raises(ModelLoadFailed) as failed:
        with loading("/models/m", "a MiniLM model"):
            raise error
    said = str(failed.value)
    assert said.startswith("cannot load a MiniLM model from /models/m: ") and "\n" not in said


@pytest.mark.parametrize("error", [AttributeError("x"), NameError("x"), AssertionError("x"), ImportError("x")])
def test_a_bug_keeps_its_traceback(error):
    """A bug in our own code is not the user's folder: it is not said as if it were."""
    with pytest.raises(type(error)):
        with loading("/models/m", "a MiniLM model"):
            raise error


def loaded_lacking(tensors: dict[str, torch.Tensor], missing: list[str]) -> SimpleNamespace:
    """A model class whose from_pretrained loads a model of `tensors` and reports `missing` (as transformers does)."""
    model = SimpleNamespace(state_dict=lambda: tensors)
    return SimpleNamespace(from_pretrained=lambda path, **options: (model, {"missing_keys": missing}))


def test_missing_tensors_are_named_largest_first_and_one_the_model_lacks_counts_as_no_values(caplog):
    """transformers may report a key its model's state_dict does not hold (a buffer not saved, another version's
    name): a head missing beside it still loads, with a warning."""
    tensors = {name: torch.zeros(size) for name, size in [("embeddings.weight", 1000), ("pooler.weight", 10)]}
    tensors |= {name: torch.zeros(size) for name, size in [("pooler.bias", 2), ("norm.weight", 3), ("norm.bias", 3)]}
    model_class = loaded_lacking(tensors, ["position_ids", "pooler.bias", "pooler.weight", "norm.bias"])
    with caplog.at_level(logging.WARNING, logger="argus.models"):
        load_pretrained(model_class, "/models/m")
    assert [record.getMessage() for record in caplog.records] == [
        "the weights in /models/m lack 4 of 5 parameters (1.5% of the values: pooler.weight, norm.bias, pooler.bias"
        " and 1 more), which start at random"
    ]


def test_a_missing_tensor_left_without_values_is_refused_however_small(caplog):
    """diffusers leaves what its weights lack on torch's meta device: the model fails at its first use."""
    tensors = {"conv_in.weight": torch.empty(4, device="meta"), "conv_in.bias": torch.zeros(2)}
    tensors |= {"body.weight": torch.zeros(1000)}
    with pytest.raises(ValueError, match="e.g. conv_in.weight\\): the model cannot run without them"):
        load_pretrained(loaded_lacking(tensors, ["conv_in.weight", "conv_in.bias"]), "/models/m", "unet")


def test_a_config_that_is_not_json_is_said_with_its_error_s_type():
    """json's message ("Expecting value: line 1 column 1 (char 0)") does not say what was read."""
    with pytest.raises(ModelLoadFailed) as failed:
        with loading("/models/m", "a MiniLM model"):
            json.loads("garbage")
    assert str(failed.value) == (
        "cannot load a MiniLM model from /models/m: JSONDecodeError: Expecting value: line 1 column 1 (char 0)"
    )
