"""Under `argus --log-format json`, an engine that loads models (its CLIP prompt embedder, its sdxl workers' pipeline)
writes JSON lines alone: transformers and diffusers drew a progress bar on standard error for each model they loaded
("Loading weights: 100%|██████████| 52/52 [...]", "Loading pipeline components...: 100%|...| 7/7"), plain text
among the JSON objects, which a log collector reading one object a line failed on, at every worker's start."""

from __future__ import annotations

import json

from tiny_models import save_tiny_clip_text

from engine_process import start_engine
from workers.tiny_pipeline import build_tiny_sdxl


def test_an_engine_loading_models_logs_json_lines_alone(tmp_path):
    model, embedder = tmp_path / "sdxl", tmp_path / "clip"
    build_tiny_sdxl(seed=0).save_pretrained(model)
    save_tiny_clip_text(embedder)
    engine = start_engine(
        tmp_path,
        "--model",
        str(model),
        "--embedder",
        "clip",
        "--embedder-path",
        str(embedder),
        workers=1,
        backend="sdxl",
        argus_options=("--log-format", "json"),
    )
    assert engine.stop() == 0
    lines = engine.log_path.read_text().splitlines()
    not_json = [line for line in lines if not _json_object(line)]
    assert not not_json, not_json
    said = [json.loads(line)["message"] for line in lines]
    assert any(message.startswith("worker local-0/") and "ready" in message for message in said), said


def _json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
