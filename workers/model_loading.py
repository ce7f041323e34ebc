"""A model folder that passes the file checks (workers/model_folder.py) and still does not load: a config.json of
wrong keys or values, a tokenizer file that is not one, weights of the wrong shapes. Every loader of a folder a user
names (the sdxl worker's pipeline, the clip and minilm embedders, `argus profile quality`'s CLIP) loads it under
`loading`, and the command says what failed in one line naming the folder, exit 2 (engine/cli.py), where it ended in
a traceback from transformers, diffusers, safetensors or torch.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager


class ModelLoadFailed(Exception):
    """A model folder its loader could not read: the message names the folder and what failed, in one line."""


@contextmanager
def loading(folder: str, kind: str) -> Iterator[None]:
    """Runs the load of `kind` ("an SD-XL pipeline") from `folder`: what the libraries raise on a folder that is
    not one they read is a ModelLoadFailed; anything else (a bug) keeps its traceback."""
    try:
        yield
    except Exception as error:
        if not _from_the_folder(error):
            raise
        raise ModelLoadFailed(f"cannot load {kind} from {folder}: {_one_line(error)}") from None


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
