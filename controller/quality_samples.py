"""Measured image qualities: the samples `argus profile quality` writes, read for `argus train-predictor` and
`argus serve --quality-profile` (controller/profiles.py DegradationMatrix.load_profiled).

Each sample is one image served at a level from a neighbour of some similarity, with its quality relative to the
exact image. Samples say what they were made with (the embedder and its model, the steps, the model), and what is
made from them is refused where that differs from what it is used with (the `*_mismatch` functions).
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.versioned import read_versioned

QUALITY_KIND = "quality_profile"


@dataclass(frozen=True)
class QualitySample:
    """One profiled image: a prompt served at `level` from a neighbour of `similarity` (None: a miss)."""

    similarity: float | None
    level: int
    quality: float
    prompt: str = ""
    neighbour_prompt: str | None = None
    # whose cosine `similarity` is: a predictor or quality classes fit on one embedder's mean nothing on another's
    embedder: str | None = None
    # which model of that embedder (engine.cache.embedders.embedder_identity): two CLIP folders differ in scale too
    embedder_identity: str | None = None
    # the denoising steps N the image was made with: a level is a number of them, so a share of N reused
    steps: int | None = None
    # the identity of the model that made it (workers/model_id.py)
    model: str | None = None


@dataclass(frozen=True)
class MadeWith:
    """What every sample of a set says it was made with (QualitySample's fields of the name); None where none says."""

    embedder: str | None
    embedder_identity: str | None
    steps: int | None
    model: str | None


# each of MadeWith's fields: what several of them are called, and why samples that say several are refused
_SEVERAL = {
    "embedder": ("embedders", "their similarities are not comparable"),
    "embedder_identity": ("embedder models", "their similarities are not comparable"),
    "steps": ("step counts", "a level is another share of the steps in each"),
    "model": ("models", "their qualities are not one model's"),
}


def made_with(samples: Iterable[QualitySample]) -> MadeWith:
    """What the samples say they were made with: ValueError if they say several things of one (in _SEVERAL's order)."""
    said: dict[str, Any] = {}
    for field, (what, why) in _SEVERAL.items():
        named = sorted({value for sample in samples if (value := getattr(sample, field)) is not None})
        if len(named) > 1:
            raise ValueError(f"samples of several {what} ({', '.join(map(str, named))}): {why}")
        said[field] = named[0] if named else None
    return MadeWith(**said)


def embedder_model_mismatch(named: str | None, identity: str, model_flag: str) -> str | None:
    """What is wrong when what was made from the similarities of the embedder model `named` (None: it does not say) is
    used with those of the model `identity`, the engine's, in the folder `model_flag` names; None if nothing is. Two
    models of one embedder (two CLIP folders) may differ in scale as much as two embedders do."""
    if named is None or named == identity:
        return None
    return (
        f"made from the similarities of the embedder model {named}, not of the engine's {identity} (give"
        f" {model_flag} the folder it was profiled with, or profile again with --embedder-model this one)"
    )


def steps_mismatch(steps: int | None, planned: int) -> str | None:
    """What is wrong when samples made with `steps` steps (None: they do not say) are used to plan levels of
    `planned` steps (workers/limits.DEFAULT_STEPS, the controller's); None if nothing is. Level 10 of 20 steps
    reuses half an image's steps, of 50 a fifth: its quality says nothing of the other."""
    if steps is None or steps == planned:
        return None
    return (
        f"made with N={steps} denoising steps, and the engine's levels are steps of N={planned}, where each reuses"
        f" another share of the steps (profile again with --steps {planned})"
    )


def embedder_mismatch(named: str | None, embedder: str) -> str | None:
    """What is wrong when what was made from the similarities of the embedder `named` (None: it does not say) is used
    with those of `embedder`; None if nothing is. Each embedder has its own scale of similarity (its own table)."""
    if named is None or named == embedder:
        return None
    return (
        f"made from the {named} embedder's similarities, not the {embedder} embedder's"
        f" (give --embedder {named}, or profile again with --embedder {embedder})"
    )


def read_quality_samples(path: str | Path) -> list[QualitySample]:
    """Profiled qualities: JSONL of samples, or JSON {level: {"lo-hi": quality}} per similarity band.

    A band becomes one sample at its midpoint. The banded JSON may be wrapped as
    a versioned "quality_profile" file with the table under "quality". A line
    or band that cannot be read is a ValueError naming the file (and line).
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None  # several JSON values: JSONL
    if _is_banded(data):
        embedder = None
        if "version" in data:  # another kind of file (a latency profile) was read as a table that is not one
            wrapper = read_versioned(path, QUALITY_KIND)
            data, embedder = wrapper.get("quality"), wrapper.get("embedder")
        return _banded_samples(path, data, embedder)
    # split at newlines only: JSON lets U+2028 and \x85 stand raw in a string (a prompt's), where splitlines breaks
    lines = text.split("\n")
    return [_sample_line(f"{path}:{number}", line) for number, line in enumerate(lines, 1) if line.strip()]


def _is_banded(data: object) -> bool:
    """Told by its shape: a banded table's values are tables, while a one-line JSONL file, one JSON value too, is
    one sample, whose values are numbers and text."""
    return isinstance(data, dict) and ("version" in data or all(isinstance(v, dict) for v in data.values()))


def _banded_samples(path: str | Path, banded: object, embedder: object) -> list[QualitySample]:
    if not isinstance(banded, dict) or not all(isinstance(bands, dict) for bands in banded.values()):
        raise ValueError(f'{path}: not a table {{level: {{"lo-hi": quality}}}}')
    try:
        embedder = _embedder_name(embedder)
        return [
            QualitySample(_band_midpoint(band), _level(level), _finite(quality), embedder=embedder)
            for level, bands in banded.items()
            for band, quality in bands.items()
        ]
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def _band_midpoint(band: str) -> float:
    """The middle of a "lo-hi" band. Summed and halved without a check, "0.95" was read as 0.475 and "0.9-0.95-1"
    as 1.425: another class, or none, without a word. Either bound may be below 0 (class 0's band reaches down to
    -1), so the "-" between them is the one that leaves a number on each side: split at every "-", "-1-0.65" was
    refused as "could not convert string to float: ''"."""
    splits = [(band[:i], band[i + 1 :]) for i, c in enumerate(band) if c == "-"]
    numbers = [pair for pair in splits if all(_is_number(bound) for bound in pair)]
    bounds = [_similarity(bound) for bound in numbers[0]] if len(numbers) == 1 else []
    if len(bounds) != 2 or bounds[0] > bounds[1]:
        raise ValueError(f'band {band!r} is not "lo-hi" with lo <= hi')
    return sum(bounds) / 2.0


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sample_line(where: str, line: str) -> QualitySample:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not JSON ({error})") from None
    if not isinstance(row, dict) or not {"level", "quality"} <= row.keys():
        raise ValueError(f"{where}: not a sample {{similarity, level, quality, prompt}}")
    prompt, neighbour_prompt = row.get("prompt", ""), row.get("neighbour_prompt")
    # the trained predictor splits both into words: a number there failed train-predictor with an AttributeError
    if not isinstance(prompt, str) or not isinstance(neighbour_prompt, str | None):
        raise ValueError(f"{where}: prompt and neighbour_prompt must be text")
    try:
        return QualitySample(
            None if row.get("similarity") is None else _similarity(row["similarity"]),
            _level(row["level"]),
            _finite(row["quality"]),
            prompt,
            neighbour_prompt,
            _embedder_name(row.get("embedder")),
            model_identity(row.get("embedder_identity"), "embedder_identity"),
            None if row.get("steps") is None else denoising_steps(row["steps"]),
            model_identity(row.get("model"), "model"),
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None


def _embedder_name(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"embedder {reprlib.repr(value)} is not an embedder's name")
    return value


def denoising_steps(value: object) -> int:
    """A file's "steps": a whole JSON number, so 50.7, "50" or true is refused where int() read each as 50 or 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"steps {reprlib.repr(value)} is not a number of denoising steps")
    return value


def model_identity(value: object, field: str) -> str | None:
    """A model's identity (workers/model_id.py: a worker's as its hello gives it, an embedder's folder's), or None."""
    if value is not None and not (isinstance(value, str) and value.isprintable() and 0 < len(value) <= 64):
        raise ValueError(f"{field} {reprlib.repr(value)} is not a model's identity")
    return value


def _similarity(value: object) -> float:
    """A cosine similarity, within float error of [-1, 1]: 1e300 overflowed the predictor's standardising, which
    failed in numpy's RuntimeWarning and a message about its means."""
    similarity = _finite(value)
    if not -1 - _COSINE_SLACK <= similarity <= 1 + _COSINE_SLACK:
        raise ValueError(f"similarity {value!r} is not a cosine similarity, -1 to 1")
    return similarity


# float32 embeddings' dot products stray past +-1 by rounding
_COSINE_SLACK = 1e-3


def _level(value: object) -> int:
    """A cache level, a whole number of steps: int() took 10.7 as level 10 and -5 as a level no profile has."""
    try:
        level = math.nan if isinstance(value, bool) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past a float's range (10**400)
        level = math.nan
    if not (level.is_integer() and level >= 0):
        raise ValueError(f"level {reprlib.repr(value)} is not a whole number of steps")
    return int(level)


def _finite(value: object) -> float:
    """A number read from a samples file: Python's json reads NaN and Infinity, and a NaN quality became an infinite
    one in the degradation matrix (a running minimum skips it), which GET /plan then showed as Infinity."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an int past a float's range (10**400): read as one, it would be infinite
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{reprlib.repr(value)} is not a finite number")
    return number
