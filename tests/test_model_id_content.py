"""A model's identity (workers/model_id.py) read from small folders made here, without torch: what changes it (a
weight's bytes, a file's name, a file in a subfolder) and what does not (where and how the configs were saved, hidden
files, the order a folder is listed in)."""

from __future__ import annotations

import json
import os
import pathlib
from pathlib import Path

import pytest

from workers.model_id import embedder_folder_id, folder_model_id, model_id

WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def save_folder(root: Path, *, version: str = "0.30.0", reverse_keys: bool = False) -> str:
    """A diffusers-like folder: model_index.json, a config and 200 KB of weights for each of two parts."""

    def write_json(path: Path, config: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        items = list(config.items())
        path.write_text(
            json.dumps(dict(reversed(items) if reverse_keys else items), indent=2 if reverse_keys else None)
        )

    write_json(
        root / "model_index.json",
        {
            "_class_name": "StableDiffusionXLPipeline",
            "_diffusers_version": version,
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
    )
    for part in ("unet", "vae"):
        write_json(
            root / part / "config.json",
            {
                "_diffusers_version": version,
                "in_channels": 4,
                "part": part,
                "_use_default_values": ["a", "b"][:: -1 if reverse_keys else 1],
            },
        )
        (root / part / "diffusion_pytorch_model.safetensors").write_bytes(bytes(range(256)) * 800)
    return str(root)


def test_parts_are_told_apart_where_they_meet():
    assert model_id("sdxl", [b"ab", b"c"]) != model_id("sdxl", [b"a", b"bc"])


def test_a_weight_changed_in_its_last_bytes_is_another_model(tmp_path):
    """A fine-tune keeps every file's size: its identity is the samples, which reach the end of each file."""
    folder = save_folder(tmp_path / "model")
    before = folder_model_id(folder)
    weights = Path(folder, WEIGHTS)
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert folder_model_id(folder) != before


def test_the_same_bytes_under_another_name_are_another_model(tmp_path):
    folder = save_folder(tmp_path / "model")
    before = folder_model_id(folder)
    os.rename(Path(folder, WEIGHTS), Path(folder, "unet/model.safetensors"))
    assert folder_model_id(folder) != before


def test_configs_saved_by_another_version_in_another_layout_are_the_same_model(tmp_path):
    """A copy saved elsewhere: another diffusers version, its keys in another order, its defaults listed in another
    order (a set's, in diffusers' _use_default_values)."""
    one = save_folder(tmp_path / "one")
    other = save_folder(tmp_path / "other", version="0.35.1", reverse_keys=True)
    assert folder_model_id(one) == folder_model_id(other)


def test_hidden_files_are_not_the_model(tmp_path):
    folder = save_folder(tmp_path / "model")
    before = folder_model_id(folder)
    Path(folder, "unet/.cache").mkdir()
    Path(folder, "unet/.cache/download.lock").write_text("partial")
    Path(folder, "vae/.config.json.swp").write_text("editor")
    assert folder_model_id(folder) == before


def test_the_order_a_folder_is_listed_in_names_no_other_model(tmp_path, monkeypatch):
    """Each host's file system lists a folder in its own order."""
    folder = save_folder(tmp_path / "model")
    listed = pathlib.Path.rglob
    before = folder_model_id(folder), embedder_folder_id("clip", folder)
    monkeypatch.setattr(pathlib.Path, "rglob", lambda self, pattern: reversed(list(listed(self, pattern))))
    assert (folder_model_id(folder), embedder_folder_id("clip", folder)) == before


@pytest.mark.parametrize("embedder", ["clip", "minilm"])
def test_an_embedder_folder_is_named_by_its_embedder_and_every_file_in_it(embedder, tmp_path):
    """A sentence-transformers download keeps its pooling settings in a subfolder (1_Pooling/config.json)."""
    folder = tmp_path / "model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "model.safetensors").write_bytes(b"\x00" * 5000)
    before = embedder_folder_id(embedder, str(folder))
    assert before.startswith(f"{embedder}:")
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert embedder_folder_id(embedder, str(folder)) != before


# beside the PyTorch weights a part loads, what a full download of SD-XL base holds and one made with allow_patterns
# (or by save_pretrained) does not: the fp16 variant, a .bin copy, Flax's, ONNX's and OpenVINO's weights
UNREAD = (
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_flax_model.msgpack",
    "model.onnx",
    "model.onnx_data",
    "openvino_model.bin",
    "openvino_model.xml",
)


def test_files_the_load_does_not_read_are_no_part_of_the_model(tmp_path):
    """Counted, the same weights loaded on two hosts whose downloads differed were two models: the engine refused
    every worker of the host whose download was not its own."""
    folder = save_folder(tmp_path / "model")
    before = folder_model_id(folder)
    for name in UNREAD:
        Path(folder, "unet", name).write_bytes(b"\x01" * 1000)
    assert folder_model_id(folder) == before


def test_the_fp16_weights_of_a_folder_that_loads_them_are_the_model(tmp_path):
    """A download of fp16 weights only loads them: theirs are the samples taken, not the plain weights beside."""
    folder = save_folder(tmp_path / "model")
    for part in ("unet", "vae"):
        os.rename(Path(folder, part, "diffusion_pytorch_model.safetensors"), Path(folder, part, UNREAD[0]))
    before = folder_model_id(folder)
    weights = Path(folder, "unet", UNREAD[0])
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert folder_model_id(folder) != before
