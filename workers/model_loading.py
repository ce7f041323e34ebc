"""A model folder that passes the file checks (workers/model_folder.py) and still does not load: a config.json of
wrong keys or values, a tokenizer file that is not one, weights of the wrong shapes, weights that lack the model's
tensors. Every loader of a folder a user names (the sdxl worker's pipeline, the clip and minilm embedders, `argus
profile quality`'s CLIP) loads it under `loading`, and its models by `load_pretrained`, and the command says what
failed in one line naming the folder, exit 2 (engine/cli.py), where it ended in a traceback from transformers,
diffusers, safetensors or torch, or (weights of no tensors of the model) loaded a model of random numbers.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("argus.models")

# what a real checkpoint leaves out, for its loader to start at random, is a head: a pooler (0.65% of
# all-MiniLM-L6-v2's values), a text projection (0.5% of CLIP ViT-L/14's text tower, 0.24% of SD-XL's second text
# encoder). A tenth of a model's values is a tower (a CLIP model's text tower is about a third of it) or the model.
# Counted by values, not by tensors: a missing layer norm is two tensors as a missing embedding table is one, and
# what turns a model's output to noise is how much of its arithmetic is random.
_REFUSED_SHARE = 0.1
_NAMED = 3  # missing tensors a warning names


class ModelLoadFailed(Exception):
    """A model folder its loader could not read: the message names the folder and what failed, in one line."""


@contextmanager
def loading(folder: str, kind: str) -> Iterator[None]:
    """Runs the load of `kind` ("an SD-XL pipeline") from `folder`: what the libraries raise on a folder that is
    not one they read is a ModelLoadFailed; anything else (a bug) keeps its traceback."""
    _no_progress_bars()
    try:
        yield
    except Exception as error:
        if not _from_the_folder(error):
            raise
        raise ModelLoadFailed(f"cannot load {kind} from {folder}: {_one_line(error)}") from None


def _no_progress_bars() -> None:
    """transformers and diffusers draw a progress bar on standard error for each model they load ("Loading weights:
    100%|...| 52/52", "Loading pipeline components..."): plain text among the log's lines, which broke `--log-format
    json`'s one object a line at every start of an sdxl worker or a model embedder. The log says what loads."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    if "diffusers" in sys.modules:  # the SD-XL pipeline's load; an embedder's imports no diffusers, nor should it
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()


def load_pretrained(model_class: Any, folder: str, part: str | None = None, **options: Any) -> Any:
    """`model_class.from_pretrained` (a transformers or a diffusers model) of `folder`, or of its subfolder `part`,
    from local files only. Neither library refuses weights that lack the model's tensors (a file of no tensors, or of
    another model's, whose names match none): transformers starts them at random and logs a report, diffusers leaves
    them without values (on torch's meta device); the model made noise, or failed at its first use. Such weights are
    a ValueError, which `loading` says; a few tensors missing (a head) are a warning."""
    path = os.path.join(folder, part) if part else folder
    model, info = model_class.from_pretrained(path, local_files_only=True, output_loading_info=True, **options)
    if missing := info["missing_keys"]:
        _check_missing(model.state_dict(), missing, path, f"its {part}'s weights" if part else "its weights")
    return model


def _check_missing(tensors: dict[str, Any], missing: Collection[str], path: str, whose: str) -> None:
    """Refuses a model whose `missing` tensors hold more than _REFUSED_SHARE of its values, or any left without
    values; warns of fewer, which start at random. Each is said by its largest missing tensors."""
    # a key the model's state_dict lacks (a buffer not saved, another version's name) counts as no values
    sizes = {key: tensors[key].numel() if key in tensors else 0 for key in missing}
    largest = sorted(missing, key=lambda key: (-sizes[key], key))
    values = sum(tensor.numel() for tensor in tensors.values())
    share = sum(sizes.values()) / max(1, values)
    # a head of a large model is a small share, a single scale (CLIP's logit_scale) next to nothing
    part_of = f"{share:.1%} of the values" if share >= 0.001 else "under 0.1% of the values"
    said = f"lack {len(missing)} of {len(tensors)} parameters"
    unset = any(tensors[key].is_meta for key in missing if key in tensors)
    if len(missing) == len(tensors):
        raise ValueError(f"{whose} {said} (e.g. {largest[0]}): the file holds another model's weights, or none")
    if share > _REFUSED_SHARE or unset:
        why = "the model cannot run without them" if unset else "they would be random numbers"
        raise ValueError(f"{whose} {said} ({part_of}, e.g. {largest[0]}): {why}")
    named = ", ".join(largest[:_NAMED]) + (f" and {len(missing) - _NAMED} more" if len(missing) > _NAMED else "")
    log.warning("the weights in %s %s (%s: %s), which start at random", path, said, part_of, named)


def _from_the_folder(error: Exception) -> bool:
    """Whether the loaders raise `error` for what a folder holds, as seen on broken folders
    (tests/test_sdxl_model_folder.py, tests/test_model_loading.py): OSError (diffusers' and transformers' own, for a
    config.json that is not JSON or weights they cannot read), ValueError (json's, a config whose parts do not fit,
    a tensor of another shape), KeyError (a tokenizer.json without its keys), TypeError (a config value of the wrong
    type), RuntimeError (transformers' size mismatch), safetensors' SafetensorError, huggingface_hub's
    StrictDataclassError (a config field of the wrong type), and torch.load's UnpicklingError, EOFError, IndexError
    and KeyError for a .bin that is not one."""
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    kinds = (OSError, ValueError, LookupError, TypeError, EOFError, RuntimeError, pickle.UnpicklingError)
    # the Rust tokenizers raise Exception itself, of no class of their own, for a tokenizer.json they cannot parse
    return isinstance(error, (*kinds, SafetensorError, StrictDataclassError)) or type(error) is Exception


def _one_line(error: Exception) -> str:
    """An error's first line (torch's UnpicklingError runs to a page; transformers' size mismatch points to a report
    above it), and the next where the first ends in a colon ("Validation error for field 'hidden_size':"), led by its
    type where the message alone does not say what failed ("'added_tokens'")."""
    lines = [line.strip() for line in str(error).strip().splitlines()] or [""]
    said = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    return said if type(error) in (OSError, ValueError) else f"{type(error).__name__}: {said}"
