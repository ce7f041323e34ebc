"""Local transformers model folders as the command line checks them (workers/model_folder.py), made without torch:
a config.json naming the model's type, weights (a .safetensors of no tensors), a tokenizer and, for a whole CLIP,
its image processor's settings. Enough to pass the checks, not to load."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def save_model_folder(folder: Path, model_type: str, processor: bool = False) -> str:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    header = b"{}"
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    if processor:
        (folder / "preprocessor_config.json").write_text("{}")
    return str(folder)
