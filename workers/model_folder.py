"""What a local model folder must hold, checked without torch: an SD-XL one (`--model DIR`), and the transformers
ones read beside it (a prompt embedder's, the CLIP model `argus profile quality` scores with).

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
# the names diffusers' and transformers' PyTorch loaders read weights under (whole, in shards, or their index)
_LOADED_STEMS = re.compile(r"(diffusion_pytorch_model|pytorch_model|model)[.-]")
# the weights of runtimes other than PyTorch, which a hub checkpoint holds beside its own (SD-XL base's: Flax's
# .msgpack, ONNX's model.onnx and model.onnx_data, OpenVINO's openvino_model.xml and .bin)
_OTHER_RUNTIMES = re.compile(r"\.(msgpack|onnx|onnx_data|h5)$|^openvino_model\.")
# a single-file checkpoint (sd_xl_base_1.0.safetensors, a fine-tune's .ckpt) and how to make a folder of it. Told
# without config=, from_single_file fetches SD-XL's configs and tokenizers from the hub, and fails offline
_SINGLE_FILES = (".safetensors", ".ckpt")
_CONVERT = (
    "convert a single-file checkpoint once with StableDiffusionXLPipeline.from_single_file(FILE, config=CONFIG)"
    ".save_pretrained(DIR), CONFIG a diffusers SD-XL base folder whose configs and tokenizers it reads (its weights"
    " are not; without config= it downloads them from the hub)"
)
# a CLIP tokenizer's vocabulary: transformers' one file, or the vocab and merges SD-XL base ships
_VOCABULARIES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
# a BERT tokenizer's (MiniLM's): transformers' one file, or its word-piece list
_BERT_VOCABULARIES = (("tokenizer.json",), ("vocab.txt",))
# config.json's model_type of a CLIP text tower alone (CLIPTextModelWithProjection), and of a whole CLIPModel
_CLIP_TEXT_TYPES = ("clip_text_model", "clip")
# the image processor's settings (CLIPProcessor): the hub's file, or transformers 5's processor file holding them
_IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def sdxl_model_problem(model_dir: str) -> str | None:
    """Why `model_dir` is not a local diffusers SD-XL base checkpoint, or None."""
    if os.path.isfile(model_dir):
        if os.path.basename(model_dir) == "model_index.json":
            return f"{model_dir!r} is a file: pass the diffusers folder that holds it, {os.path.dirname(model_dir)!r}"
        return f"{model_dir!r} is a file: argus loads a diffusers folder (one holding model_index.json); {_CONVERT}"
    if not os.path.isdir(model_dir):
        return _tilde(model_dir) or (
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
        # the folder of one's models (~/models), or a hub cache's snapshots/: the checkpoints are a level down
        if within := sorted(glob.glob(os.path.join(glob.escape(model_dir), "*", "model_index.json"))):
            folders = " or ".join(os.path.dirname(path) for path in within)
            return f"{model_dir!r} holds no model_index.json; its subfolders do: pass one, --model {folders}"
        if single := sorted(name for name in os.listdir(model_dir) if name.endswith(_SINGLE_FILES)):
            # a folder made for a downloaded sd_xl_base_1.0.safetensors: said to be no checkpoint, with no way on
            return f"{model_dir!r} holds {single[0]}, a single-file checkpoint, and no model_index.json; {_CONVERT}"
        return f"{model_dir!r} holds no model_index.json; it is not a diffusers checkpoint"
    try:
        index = _json_object(index_path)
    except ValueError as error:
        return str(error)
    unnamed = [name for name in _COMPONENTS if not _named(index.get(name))]
    if unnamed:
        kind = index.get("_class_name", "a pipeline of no named class")
        return f"{model_dir!r} is not SD-XL base: its model_index.json ({kind}) names no {', '.join(unnamed)}"
    # a part beyond SD-XL base's (an image_encoder) loads from its folder too: without it, diffusers failed once the
    # UNet had loaded, naming the model's folder ("no file named model.safetensors ... in directory DIR")
    extra = [name for name, entry in index.items() if name not in _COMPONENTS and _named(entry)]
    missing = [f"{name}/" for name in (*_COMPONENTS, *extra) if not os.path.isdir(os.path.join(model_dir, name))]
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
    if not os.path.isfile(os.path.join(model_dir, "scheduler", "scheduler_config.json")):
        # diffusers reads it once every part with weights has loaded: each start of a worker loaded the UNet to fail
        return f"{os.path.join(model_dir, 'scheduler')} holds no scheduler_config.json"
    try:
        channels = _json_object(os.path.join(model_dir, "unet", "config.json")).get("in_channels")
    except ValueError as error:
        return str(error)
    if channels != LATENT_CHANNELS:
        # an inpainting UNet (9: the latent, a mask and the masked image's latent) loaded, and failed every batch
        return f"{model_dir!r} is not SD-XL base: its unet takes {channels} input channels, not {LATENT_CHANNELS}"
    return None


def embedder_model_problem(embedder: str, folder: str) -> str | None:
    """Why `folder` is not a model the `embedder` (clip or minilm, engine/cache/embedders.py) loads, or None. Else
    its load failed in a traceback from transformers (OSError, or "Couldn't instantiate the backend tokenizer"),
    after seconds of importing torch, or with the engine already started."""
    if embedder == "clip":
        return _transformers_problem(folder, "a CLIP text encoder", _CLIP_TEXT_TYPES) or _tokenizer_problem(folder)
    return _transformers_problem(folder, "a MiniLM model", None) or _vocabulary_problem(folder, _BERT_VOCABULARIES)


def clip_model_problem(folder: str) -> str | None:
    """Why `folder` is not a whole CLIP model (CLIPModel, both towers, and CLIPProcessor's files), or None."""
    if problem := _transformers_problem(folder, "a CLIP model", ("clip",)) or _tokenizer_problem(folder):
        return problem
    if not any(os.path.isfile(os.path.join(folder, name)) for name in _IMAGE_PROCESSOR_FILES):
        return f"{folder} holds no {' or '.join(_IMAGE_PROCESSOR_FILES)} (how images are prepared for CLIP)"
    return None


def _transformers_problem(folder: str, kind: str, model_types: tuple[str, ...] | None) -> str | None:
    """What a transformers model folder lacks: itself, its config.json (of one of `model_types`, None: any) or
    its weights."""
    if not os.path.exists(folder):
        return _tilde(folder) or f"{folder} does not exist: pass a local folder holding {kind}"
    if not os.path.isdir(folder):
        return f"{folder} is a file, not a folder holding {kind}"
    if unreadable := _unreadable(folder):
        return unreadable
    config = os.path.join(folder, "config.json")
    if not os.path.isfile(config):
        return f"{folder} holds no config.json: not {kind}"
    try:
        model_type = _json_object(config).get("model_type")
    except ValueError as error:
        return str(error)
    if model_types is not None and model_type not in model_types:
        return f"{folder} is not {kind}: its config.json names model_type {model_type!r}"
    # walked once it looks like a model folder, not a home folder passed by mistake
    return _unreadable_within(folder) or _weights_problem(folder, "model.safetensors or pytorch_model.bin")


def _tilde(path: str) -> str | None:
    """Says so when `path` starts with a ~ no shell expanded (`--model=~/sdxl`, a service's unit file) and the
    folder the user meant is there: said not to exist, it was taken for a typo."""
    if not path.startswith("~") or not os.path.exists(home := os.path.expanduser(path)):
        return None
    said = "no shell expanded its ~ (bash expands one at a word's start alone, not after an =)"
    return f"{path!r} does not exist: {said}; pass {home!r}"


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


def sdxl_scheduler_notice(model_dir: str) -> str | None:
    """What to say of a checked folder whose scheduler/scheduler_config.json names another scheduler class than its
    model_index.json, or None. diffusers makes model_index.json's, from the other's settings (those it does not take
    dropped without a word): a folder whose scheduler_config.json was edited to DPM-Solver ran Euler, and nothing said
    so."""
    named = _json_object(os.path.join(model_dir, "model_index.json"))["scheduler"][1]
    configured = _json_object(os.path.join(model_dir, "scheduler", "scheduler_config.json")).get("_class_name")
    if configured in (None, named):
        return None
    return (
        f"{os.path.join(model_dir, 'scheduler', 'scheduler_config.json')} names {configured}, and the folder's"
        f" model_index.json {named}: diffusers runs {named}, with the settings it shares; make them agree to run"
        f" {configured}"
    )


def sdxl_weights_variant(model_dir: str) -> str | None:
    """ "fp16" when a part of a checked folder holds fp16-variant weights only (a download of *.fp16.safetensors,
    half the size): diffusers loads such a folder only when told the variant, and then takes a part's plain
    weights where it has no fp16 ones."""
    folders = [os.path.join(model_dir, name) for name in _MODELS]
    # a folder a part lacks (not SD-XL's, when its identity is taken) holds no weights to tell
    return "fp16" if any(not _weights(folder)[0] for folder in folders if os.path.isdir(folder)) else None


def sdxl_part_variant(model_dir: str, part: str) -> str | None:
    """The variant diffusers loads `part` (unet, vae, text_encoder, text_encoder_2) of a checked folder with: the
    folder's, where the part holds weights of it; else None, the part's plain weights."""
    variant = sdxl_weights_variant(model_dir)
    return variant if variant and _weights(os.path.join(model_dir, part))[1] else None


def sdxl_unread_files(model_dir: str, part: str) -> set[str]:
    """The names of the files in the folder of `part` (any of a diffusers folder's parts) that its load does not
    read: the weights of other runtimes (Flax, ONNX, OpenVINO), of the variant it does not load (the fp16 ones beside
    the plain ones it loads, or the reverse) and .bin weights beside the .safetensors ones it reads first. A full
    download of SD-XL base holds them all; one made with allow_patterns holds fewer. Counted in the model's identity
    (workers/model_id.py), the same weights loaded on two hosts were two models, and the engine refused the
    workers of the host whose download differed from its own."""
    folder = os.path.join(model_dir, part)
    if part not in _MODELS or not os.path.isdir(folder):
        return set()
    names = os.listdir(folder)
    fp16 = sdxl_part_variant(model_dir, part) is not None
    weights = [name for name in names if _WEIGHTS.search(name) and _LOADED_STEMS.match(name)]
    read = [name for name in weights if bool(_FP16.search(name)) == fp16]
    if any(".safetensors" in name for name in read):
        read = [name for name in read if ".safetensors" in name]
    return {name for name in names if _OTHER_RUNTIMES.search(name) or (_WEIGHTS.search(name) and name not in read)}


def _weights(folder: str) -> tuple[bool, bool]:
    """Whether `folder` holds plain weights, and fp16-variant ones (diffusion_pytorch_model.fp16.safetensors)."""
    variants = [bool(_FP16.search(name)) for name in os.listdir(folder) if _WEIGHTS.search(name)]
    return not all(variants), any(variants)


def _tokenizer_problem(folder: str) -> str | None:
    """transformers makes a CLIP tokenizer of an empty folder: without a vocabulary, one of 2 tokens, which read
    every prompt as the same (the images answered made, and alike); without tokenizer_config.json, one of no length
    limit, and every batch failed on it (OverflowError, as the prompts were cut to that length)."""
    if not os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
        return f"{folder} holds no tokenizer_config.json"
    return _vocabulary_problem(folder, _VOCABULARIES)


def _vocabulary_problem(folder: str, vocabularies: tuple[tuple[str, ...], ...]) -> str | None:
    if not any(all(os.path.isfile(os.path.join(folder, name)) for name in names) for names in vocabularies):
        said = ", or ".join(" and ".join(names) for names in vocabularies)
        return f"{folder} holds no vocabulary: {said}"
    return None


def _weights_problem(
    folder: str, names: str = "diffusion_pytorch_model.safetensors or model.safetensors (or .fp16. ones)"
) -> str | None:
    if not os.path.isfile(os.path.join(folder, "config.json")):
        return f"{folder} holds no config.json"
    if not any(_weights(folder)):
        return f"{folder} holds no weights: {names}"
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
