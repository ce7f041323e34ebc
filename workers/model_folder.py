"""What a local SD-XL folder (`--model DIR`) must hold, checked without torch.

The command line refuses a folder that cannot serve before a worker starts: every start would import torch and
diffusers for seconds and fail, and (launched by an engine) be restarted for ever. Worse, diffusers loads some
folders that are not SD-XL base (an SD 1.5 folder, the SD-XL refiner) as an SD-XL pipeline with parts missing: the
worker said hello, and failed every batch the engine sent it.
"""

from __future__ import annotations

import glob
import json
import os
import re

from workers.limits import LATENT_CHANNELS

# the parts StableDiffusionXLPipeline runs; the refiner has no text_encoder, SD 1.5 no text_encoder_2, SD 3 no unet
_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
# the parts that hold weights: a config.json and weights next to it (diffusers' or transformers' file names)
_MODELS = ("unet", "vae", "text_encoder", "text_encoder_2")
# weights, or the index of a sharded set of them; a variant's name holds ".fp16." (model.fp16.safetensors, the
# index diffusion_pytorch_model.safetensors.index.fp16.json) or, in a shard's, ".fp16-" (model.fp16-00001-of-00002...)
_WEIGHTS = re.compile(r"\.(safetensors|bin)(\.index(\.fp16)?\.json)?$")
_FP16 = re.compile(r"\.fp16[.-]")
# a CLIP tokenizer's vocabulary: transformers' one file, or the vocab and merges SD-XL base ships
_VOCABULARIES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def sdxl_model_problem(model_dir: str) -> str | None:
    """Why `model_dir` is not a local diffusers SD-XL base checkpoint, or None."""
    if os.path.isfile(model_dir):
        return (
            f"{model_dir!r} is a file: argus loads a diffusers folder (one holding model_index.json); convert a"
            " single-file checkpoint once with StableDiffusionXLPipeline.from_single_file(FILE).save_pretrained(DIR)"
        )
    if not os.path.isdir(model_dir):
        return (
            f"SD-XL model directory {model_dir!r} does not exist; pass a local"
            " diffusers checkpoint (a directory holding model_index.json)"
        )
    if unreadable := _unreadable(model_dir):
        return unreadable
    index_path = os.path.join(model_dir, "model_index.json")
    if not os.path.isfile(index_path):
        # a hub download's cache folder (models--ORG--NAME) keeps each revision in snapshots/REVISION: said to be no
        # checkpoint, it was taken for a model argus cannot read, or one it would have to download
        snapshots = sorted(glob.glob(os.path.join(glob.escape(model_dir), "snapshots", "*", "model_index.json")))
        if snapshots:
            revisions = " or ".join(os.path.dirname(path) for path in snapshots)
            return f"{model_dir!r} is a hub cache folder: pass the checkpoint it holds, --model {revisions}"
        return f"{model_dir!r} holds no model_index.json; it is not a diffusers checkpoint"
    try:
        index = _json_object(index_path)
    except ValueError as error:
        return str(error)
    unnamed = [name for name in _COMPONENTS if not _named(index.get(name))]
    if unnamed:
        kind = index.get("_class_name", "a pipeline of no named class")
        return f"{model_dir!r} is not SD-XL base: its model_index.json ({kind}) names no {', '.join(unnamed)}"
    missing = [f"{name}/" for name in _COMPONENTS if not os.path.isdir(os.path.join(model_dir, name))]
    if missing:
        return f"{model_dir!r} lacks {', '.join(missing)} (named in its model_index.json)"
    for name in _COMPONENTS:
        if unreadable := _unreadable_within(os.path.join(model_dir, name)):
            return unreadable
    for name in _MODELS:
        problem = _weights_problem(os.path.join(model_dir, name))
        if problem:
            return problem
    for name in ("tokenizer", "tokenizer_2"):
        if problem := _tokenizer_problem(os.path.join(model_dir, name)):
            return problem
    try:
        channels = _json_object(os.path.join(model_dir, "unet", "config.json")).get("in_channels")
    except ValueError as error:
        return str(error)
    if channels != LATENT_CHANNELS:
        # an inpainting UNet (9: the latent, a mask and the masked image's latent) loaded, and failed every batch
        return f"{model_dir!r} is not SD-XL base: its unet takes {channels} input channels, not {LATENT_CHANNELS}"
    return None


def _unreadable(path: str) -> str | None:
    """Says so when this user cannot read `path` (a folder: list and enter it). Else a folder it cannot list was
    reported as lacking what it holds (`holds no model_index.json`), and a file it cannot open (a download made by
    root, a service run as another user) failed each worker as it loaded."""
    wanted = os.R_OK | os.X_OK if os.path.isdir(path) else os.R_OK
    if os.access(path, wanted):
        return None
    if os.path.islink(path) and not os.path.exists(path):
        # a hub cache's snapshot links each file to a blob, which an interrupted download never wrote
        return f"{path} links to {os.readlink(path)}, which does not exist"
    return f"{path} cannot be read by this user (uid {os.getuid()}): permission denied"


def _unreadable_within(folder: str) -> str | None:
    """The first problem of _unreadable in `folder`, its subfolders and their files."""
    if unreadable := _unreadable(folder):
        return unreadable
    for parent, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        # hidden files (a download's .cache/) are not the model: nothing loads them (workers/model_id.py)
        for name in sorted(folders) + sorted(name for name in files if not name.startswith(".")):
            if unreadable := _unreadable(os.path.join(parent, name)):
                return unreadable
    return None


def _json_object(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot be read as JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a JSON object")
    return value


def _named(entry: object) -> bool:
    # model_index.json names a part as [library, class]; [null, null] is a part the pipeline goes without
    return isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)


def sdxl_weights_variant(model_dir: str) -> str | None:
    """ "fp16" when a part of a checked folder holds fp16-variant weights only (a download of *.fp16.safetensors,
    half the size): diffusers loads such a folder only when told the variant, and then takes a part's plain
    weights where it has no fp16 ones."""
    return "fp16" if any(not _weights(os.path.join(model_dir, name))[0] for name in _MODELS) else None


def _weights(folder: str) -> tuple[bool, bool]:
    """Whether `folder` holds plain weights, and fp16-variant ones (diffusion_pytorch_model.fp16.safetensors)."""
    variants = [bool(_FP16.search(name)) for name in os.listdir(folder) if _WEIGHTS.search(name)]
    return not all(variants), any(variants)


def _tokenizer_problem(folder: str) -> str | None:
    """transformers makes a tokenizer of an empty folder: without a vocabulary, one of 2 tokens, which read every
    prompt as the same (the images answered made, and alike); without tokenizer_config.json, one of no length
    limit, and every batch failed on it (OverflowError, as the prompts were cut to that length)."""
    if not os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
        return f"{folder} holds no tokenizer_config.json"
    if not any(all(os.path.isfile(os.path.join(folder, name)) for name in names) for names in _VOCABULARIES):
        return f"{folder} holds no vocabulary: tokenizer.json, or vocab.json and merges.txt"
    return None


def _weights_problem(folder: str) -> str | None:
    if not os.path.isfile(os.path.join(folder, "config.json")):
        return f"{folder} holds no config.json"
    if not any(_weights(folder)):
        return f"{folder} holds no weights: diffusion_pytorch_model.safetensors or model.safetensors (or .fp16. ones)"
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors") and (damage := _safetensors_damage(os.path.join(folder, name))):
            return f"{os.path.join(folder, name)} is damaged ({damage}): download or save it again"
    return None


def _safetensors_damage(path: str) -> str | None:
    """What is wrong with a .safetensors file, read from its header alone (a few hundred KB for SD-XL's UNet): an
    8-byte length, a JSON header of that length naming each tensor's span, then the spans, which end the file.
    A download cut short was found only as the worker loaded it, after torch's import; in a text encoder, in an error
    naming no file ("SafetensorError: Error while deserializing header: header too small")."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little")
        if len(head) < 8 or length > size - 8:
            return f"{size} bytes, too few for its header"
        try:
            header = json.loads(f.read(length))
            ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "not a safetensors file: its header is not one"
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        return f"{size} bytes where its header accounts for {expected}"
    return None
