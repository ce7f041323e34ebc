"""`argus worker --backend sdxl --model DIR` on a real diffusers folder (the tiny pipeline saved as SD-XL is), broken
as users break theirs: each ends in one line and exit 2, before any hello, never a traceback."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from engine.cli import main
from workers.tiny_pipeline import build_tiny_sdxl

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
    assert last.startswith("argus worker: error: --model "), err
    return last


# weights that transformers reads itself (the text encoders): its loaders raise safetensors' and pickle's own errors,
# which the worker let through as a traceback, exit 1
CORRUPT_WEIGHTS = {
    "truncated safetensors": (
        lambda model: _cut(model / "text_encoder" / "model.safetensors", 999),
        "SafetensorError: Error while deserializing header",
    ),
    "empty safetensors": (
        lambda model: _cut(model / "text_encoder_2" / "model.safetensors", 0),
        "SafetensorError: Error while deserializing header",
    ),
    "garbage .bin": (
        lambda model: _replace(model / "text_encoder" / "model.safetensors", "pytorch_model.bin", b"\x80" * 99),
        "",  # what torch.load makes of it depends on the bytes (UnpicklingError, IndexError): named, in one line
    ),
}


def _cut(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def _replace(path: Path, name: str, data: bytes) -> None:
    path.unlink()
    (path.parent / name).write_bytes(data)


@pytest.mark.parametrize(("spoil", "says"), CORRUPT_WEIGHTS.values(), ids=CORRUPT_WEIGHTS)
def test_corrupt_text_encoder_weights_fail_the_worker_in_one_line(spoil, says, model, capsys):
    spoil(model)
    assert main([*WORKER, str(model)]) == 2
    line = one_line_error(capsys)
    assert re.match(rf"argus worker: error: --model {re.escape(str(model))} cannot serve on cpu: \w+Error: ", line)
    assert says in line
