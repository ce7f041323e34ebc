"""The Optimal-K predictor: for one prompt, the highest level K whose expected quality stays above a target.

Two kinds, one method (`predict(lookup) -> K*`):
- `SimilarityPredictor`, the default, needs no training: the embedder's
  similarity table, which is calibrated for about 95% quality.
- `TrainedPredictor`: per level K, a logistic model of P(quality >= target) on
  prompt features, fit on profiled samples (`argus train-predictor`).
Either way K* is a level the neighbour's latents exist for, or 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from controller.quality_samples import QualitySample, model_identity
from controller.similarity import SimilarityTable
from controller.versioned import fields_of, read_versioned, write_versioned

PREDICTOR_KIND = "k_predictor"


class Lookup(NamedTuple):
    """What the prompt cache found for one prompt. A tuple: one is made for every request, on the prompt cache's
    thread, where a frozen dataclass cost three times as much."""

    similarity: float | None  # cosine similarity of the nearest cached prompt; None: a miss
    # levels the request may be served at from that neighbour's latents, of the default 50 steps (a request of other
    # steps: the levels that cover the steps they are held at, controller/level_shares.py)
    neighbour_levels: tuple[int, ...] = ()
    prompt: str = ""
    neighbour_prompt: str | None = None


class KPredictor(Protocol):
    def predict(self, lookup: Lookup) -> int: ...


def stored_level_at_most(level: int, neighbour_levels: Iterable[int]) -> int:
    """The highest level <= `level` the neighbour has a latent for; 0 (run in full) when there is none."""
    return max((k for k in neighbour_levels if 0 < k <= level), default=0)


@dataclass(frozen=True)
class SimilarityPredictor:
    table: SimilarityTable

    def predict(self, lookup: Lookup) -> int:
        return stored_level_at_most(self.table.level_for(lookup.similarity), lookup.neighbour_levels)


# -- the trained predictor ---------------------------------------------------------------
BASE_FEATURES = ("similarity", "log_words")
OVERLAP = "word_overlap"  # used only when every training sample names its neighbour's prompt


def features_of(samples: Iterable[QualitySample]) -> tuple[str, ...]:
    """The features a predictor fit on `samples` (those served from a neighbour) uses: word overlap only when every
    one names its neighbour's prompt."""
    return BASE_FEATURES + ((OVERLAP,) if all(s.neighbour_prompt is not None for s in samples) else ())


def feature_vector(names: Sequence[str], similarity: float, prompt: str, neighbour_prompt: str | None) -> list[float]:
    words = prompt.lower().split()
    values = {"similarity": similarity, "log_words": math.log1p(len(words))}
    if OVERLAP in names:
        if neighbour_prompt is None:
            raise ValueError("this predictor uses word overlap: the lookup must give the neighbour's prompt")
        mine, theirs = set(words), set(neighbour_prompt.lower().split())
        values[OVERLAP] = len(mine & theirs) / len(mine | theirs) if mine | theirs else 1.0
    return [values[name] for name in names]


@dataclass(frozen=True)
class TrainedPredictor:
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: Mapping[int, tuple[float, ...]]  # level -> (intercept, one weight per standardised feature)
    target: float
    min_probability: float
    provenance: str
    embedder: str | None = None  # whose similarities it was fit on (None: its samples did not say)
    embedder_identity: str | None = None  # which model of that embedder (engine.cache.embedders.embedder_identity)
    model: str | None = None  # the model its samples' images were made on (workers/model_id.py)

    def __post_init__(self) -> None:
        # checked here, not at the first cache hit: a malformed file would fail every request served from a neighbour
        n = len(self.features)
        if unknown := set(self.features) - {*BASE_FEATURES, OVERLAP}:
            raise ValueError(f"unknown features {sorted(unknown)}")
        if len(self.mean) != n or len(self.scale) != n:
            raise ValueError(f"mean and scale need one value per feature ({n})")
        if not all(math.isfinite(v) for v in self.mean) or not all(math.isfinite(v) and v > 0 for v in self.scale):
            raise ValueError("means must be finite and scales finite and > 0")
        for level, w in self.weights.items():
            if level <= 0 or len(w) != n + 1 or not all(math.isfinite(v) for v in w):
                raise ValueError(f"level {level}: needs a level > 0 and {n + 1} finite weights (intercept first)")
        if not (math.isfinite(self.target) and 0 <= self.min_probability <= 1):
            raise ValueError("target must be finite and min_probability within 0..1")
        if not isinstance(self.embedder, str | None):
            raise ValueError(f"embedder {self.embedder!r} is not an embedder's name")
        # as a latency profile's and the samples' are: a line break in one forged a line in the engine's log
        model_identity(self.embedder_identity, "embedder_identity")
        model_identity(self.model, "model")

    def probability(self, level: int, lookup: Lookup) -> float:
        """P(quality >= target) for this prompt served at `level` from its neighbour."""
        if level == 0:
            return 1.0
        if lookup.similarity is None:
            return 0.0
        x = np.asarray(feature_vector(self.features, lookup.similarity, lookup.prompt, lookup.neighbour_prompt))
        w = np.asarray(self.weights[level])
        return float(_sigmoid(w[0] + w[1:] @ ((x - self.mean) / self.scale)))

    def predict(self, lookup: Lookup) -> int:
        for level in sorted(set(lookup.neighbour_levels) & set(self.weights), reverse=True):
            if self.probability(level, lookup) >= self.min_probability:
                return level
        return 0

    @classmethod
    def fit(
        cls,
        samples: Iterable[QualitySample],
        target: float = 95.0,
        min_probability: float = 0.5,
        l2: float = 1.0,
        provenance: str = "",
        embedder: str | None = None,
        embedder_identity: str | None = None,
        model: str | None = None,
        features: tuple[str, ...] | None = None,
    ) -> TrainedPredictor:
        """One L2-regularised logistic regression per level on samples served from a neighbour (level > 0), on
        `features` (default: `features_of` them)."""
        if not (math.isfinite(l2) and l2 > 0):
            raise ValueError(f"l2 must be > 0, not {l2}: without a penalty a separable level has no fit")
        usable = [s for s in samples if s.similarity is not None and s.level > 0]
        if not usable:
            raise ValueError("no samples served from a cached neighbour (similarity given, level > 0)")
        names = features or features_of(usable)
        x = np.array([feature_vector(names, s.similarity, s.prompt, s.neighbour_prompt) for s in usable])
        mean = x.mean(axis=0)
        # a feature of one value (every prompt of as many words) has no spread to scale by; its std is not always 0 but
        # rounding (2e-16 over 200 samples), which scaled a prompt of other length to +-1e15 and its P to 0 or 1
        scale = np.where(np.ptp(x, axis=0) > 0, x.std(axis=0), 1.0)
        z = (x - mean) / scale
        levels = np.array([s.level for s in usable])
        good = np.array([s.quality >= target for s in usable], dtype=float)
        weights = {
            int(k): tuple(float(v) for v in _fit_logistic(z[levels == k], good[levels == k], l2))
            for k in np.unique(levels)
        }
        return cls(
            names,
            tuple(mean.tolist()),
            tuple(scale.tolist()),
            weights,
            target,
            min_probability,
            provenance,
            embedder,
            embedder_identity,
            model,
        )

    @classmethod
    def load(cls, path: str | Path) -> TrainedPredictor:
        data = read_versioned(path, PREDICTOR_KIND)
        with fields_of(path):
            return cls(
                tuple(str(name) for name in data["features"]),
                tuple(float(v) for v in data["mean"]),
                tuple(float(v) for v in data["scale"]),
                {int(k): tuple(float(v) for v in w) for k, w in data["weights"].items()},
                float(data["target"]),
                float(data["min_probability"]),
                data["provenance"],
                data.get("embedder"),  # none in a predictor saved before it was kept
                data.get("embedder_identity"),
                data.get("model"),
            )

    def save(self, path: str | Path) -> None:
        payload = {
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "weights": {str(k): list(w) for k, w in sorted(self.weights.items())},
            "target": self.target,
            "min_probability": self.min_probability,
            "embedder": self.embedder,
            "embedder_identity": self.embedder_identity,
            "model": self.model,
        }
        write_versioned(path, PREDICTOR_KIND, self.provenance, payload)


def _sigmoid(t: np.ndarray | float) -> np.ndarray | float:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(t)))  # tanh form: no overflow for large |t|


def _fit_logistic(z: np.ndarray, y: np.ndarray, l2: float, iterations: int = 50) -> np.ndarray:
    """Newton's method (IRLS) with a ridge penalty; the intercept gets a tiny one, so a level whose
    samples are all good (or all bad) still has finite weights."""
    design = np.hstack([np.ones((len(z), 1)), z])
    penalty = np.diag([1e-3] + [l2] * z.shape[1])
    w = np.zeros(design.shape[1])
    for _ in range(iterations):
        p = _sigmoid(design @ w)
        gradient = design.T @ (p - y) + penalty @ w
        hessian = design.T @ (design * (p * (1.0 - p))[:, None]) + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w
