"""A model's identity: what the engine compares across workers and records in its saved cache.

The engine's cache hands latents one worker made to any other, so every worker must run the same model. A path
names nothing (the same model sits at another path on each host, and a folder can be replaced in place), so the
identity is a digest of content, cheap enough to take at every start: a diffusers folder's config files (parsed,
without the fields that name the library version or where it was saved from), and for each weight file its load reads
(not another runtime's, nor the variant or format it does not load, which one download holds and another not) its name,
its size and 16 samples of 4 KiB spread over it. Name and size alone would miss a fine-tune (the same tensors in the
same dtype: the same bytes count); the samples see its changed weights without reading gigabytes. Torch-free: the
engine names its own model (argus serve --model) without importing torch. A prompt embedder's folder is named the
same way (embedder_folder_id): the saved cache's vectors are that model's.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from controller.profiles import LatencyProfile
from workers.limits import PLACEHOLDER_LATENTS, SDXL_LATENTS, latent_shape
from workers.model_folder import sdxl_unread_files

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".h5", ".gguf")
# a file not named as weights but this large is treated as weights all the same: sampled, not read whole
_MAX_READ_BYTES = 64 << 20
_SAMPLES = 16
_SAMPLE_BYTES = 4096
# config fields that differ between two copies of one model: the version of the library that saved it, (in
# transformers' configs) the path it was loaded from, and diffusers' list of the fields left at their defaults,
# whose order is a set's (it differs from one process to the next; the values themselves are in the config)
_INCIDENTAL = ("_diffusers_version", "transformers_version", "_name_or_path", "_commit_hash", "_use_default_values")
# the latency profile a sim worker runs (argus worker has no flag for another): its model
SIM_PROFILE = "sdxl_a100"


def model_id(backend: str, parts: Iterable[bytes]) -> str:
    """`backend:` and 16 hex digits digesting `parts`, in order."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return f"{backend}:{digest.hexdigest()}"


def backend_of(identity: str) -> str:
    """The backend a model_id() names: what its workers' latents are shaped by (workers/limits.py latent_shape)."""
    return identity.partition(":")[0]


def folder_model_id(model_dir: str) -> str:
    """The identity of a diffusers checkpoint: model_index.json and the folders of the components it names."""
    root = Path(model_dir)
    index = json.loads((root / "model_index.json").read_text(encoding="utf-8"))
    components = sorted(name for name, value in index.items() if not name.startswith("_") and isinstance(value, list))
    files = [root / "model_index.json"]
    for component in components:
        # a component that is null in model_index.json has no folder
        if (root / component).is_dir():
            # what the load does not read is no part of the model (model_folder.sdxl_unread_files)
            unread = {root / component / name for name in sdxl_unread_files(model_dir, component)}
            files += sorted(
                path for path in (root / component).rglob("*") if _counted(path, root) and path not in unread
            )
    return model_id("sdxl", (part for path in files for part in _file_parts(path, root)))


def embedder_folder_id(embedder: str, model_dir: str) -> str:
    """The identity of a prompt embedder's model folder (`clip`, `minilm`), as a saved cache records it: every file
    in it. Two such models may share a width (every MiniLM-L6 and -L12 variant: 384; CLIP ViT-B/32 and B/16: 512),
    and a cache's vectors compared with another model's embeddings are noise that may pass a threshold."""
    root = Path(model_dir)
    files = sorted(path for path in root.rglob("*") if _counted(path, root))
    return model_id(embedder, (part for path in files for part in _file_parts(path, root)))


def config_bytes(config: Mapping) -> bytes:
    """A config's content, as folder_model_id reads a config file: canonical JSON without the incidental fields."""
    kept = {key: value for key, value in config.items() if key not in _INCIDENTAL}
    return json.dumps(kept, sort_keys=True, default=str).encode()


def sim_model_id(profile: LatencyProfile, latents: str = PLACEHOLDER_LATENTS) -> str:
    """A simulated worker's model is its latency profile and the kind of latents it passes (workers/limits.py
    SIM_LATENTS): an engine's cache holds latents of the one kind its model's workers take, and a saved cache of
    the other kind is another model's, refused whole at the restore."""
    latency = {str(level): list(row) for level, row in sorted(profile.latency_s.items())}
    described = {"name": profile.name, "steps": profile.steps, "latency_s": latency}
    if (
        latents != PLACEHOLDER_LATENTS
    ):  # the placeholders' identity is the one sim workers always had: their saves still load
        described["latents"] = latents
    return model_id("sim", [config_bytes(described)])


def model_latent_shape(backend: str, identity: str, width: int, height: int) -> tuple[int, int, int]:
    """The shape of one latent the `backend` workers of the model `identity` names pass through, and resume from, at
    width x height. A sim model passing SD-XL's latents is known by its identity: that of the profile every sim
    worker runs (SIM_PROFILE) with them."""
    sim_latents = SDXL_LATENTS if backend == "sim" and identity == _sim_sdxl_latents_id() else PLACEHOLDER_LATENTS
    return latent_shape(backend, width, height, sim_latents)


@functools.cache
def _sim_sdxl_latents_id() -> str:
    return sim_model_id(LatencyProfile.bundled(SIM_PROFILE), SDXL_LATENTS)


def _counted(path: Path, root: Path) -> bool:
    # hidden files (a download's .cache/, an editor's swap file) are not the model
    return path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)


def _file_parts(path: Path, root: Path) -> Iterable[bytes]:
    yield path.relative_to(root).as_posix().encode()
    size = path.stat().st_size
    if path.suffix in WEIGHT_SUFFIXES or size > _MAX_READ_BYTES:
        yield str(size).encode()
        yield _samples(path, size)
    else:
        yield _content(path)


def _content(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix == ".json":
        try:
            parsed = json.loads(raw)
        except ValueError:
            return raw  # not for us to judge: the pipeline's loader says what is wrong with it
        if isinstance(parsed, dict):
            return config_bytes(parsed)
    return raw


def _samples(path: Path, size: int) -> bytes:
    """_SAMPLES reads of _SAMPLE_BYTES, evenly spread from the start of the file to its end."""
    last = max(size - _SAMPLE_BYTES, 0)
    chunks = []
    with open(path, "rb") as f:
        for i in range(_SAMPLES):
            f.seek(last * i // (_SAMPLES - 1))
            chunks.append(f.read(_SAMPLE_BYTES))
    return hashlib.blake2b(b"".join(chunks), digest_size=16).digest()
