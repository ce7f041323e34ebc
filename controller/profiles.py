"""Profiles the controller plans with: batch latency per level K, and image quality per level.

- `LatencyProfile`: seconds per batch by (level K, batch size), and what follows
  from it: a worker's capacity under an SLO (the Proteus rule) and the largest
  batch that meets a deadline.
- `QualityModel`: the `sim` backend's modelled quality of an image served at
  level K from a neighbour of similarity s (a model, not a measurement).
- `DegradationMatrix`: expected quality of a prompt whose best level is K when it
  is served at K', from the quality model or from measured qualities.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from statistics import NormalDist

import numpy as np

from controller.quality_samples import (
    QualitySample,
    denoising_steps,
    embedder_mismatch,
    made_with,
    model_identity,
    read_quality_samples,
    steps_mismatch,
)
from controller.similarity import SimilarityTable
from controller.versioned import DATA_DIR, fields_of, read_versioned, write_versioned

LATENCY_KIND = "latency_profile"


# -- latency ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyProfile:
    """Seconds one worker takes for a batch of 1..max_batch images at each level K."""

    name: str
    steps: int
    latency_s: Mapping[int, tuple[float, ...]]  # level -> seconds for a batch of 1, 2, ... images
    provenance: str
    # the formula the table was computed from, when it was (kept so the file can be checked and rebuilt)
    derivation: Mapping[str, float] | None = None
    # the --time-scale of the sim workers it was measured on (1: real time, a real model's): a sim engine at another
    # plans with it scaled to its own (engine/control/setup.py)
    time_scale: float = 1.0
    # the identity of the model it was measured on (workers/model_id.py); None: not said (the bundled profiles)
    model: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError(f"time_scale must be a positive number, got {self.time_scale!r}")
        lengths = {len(row) for row in self.latency_s.values()}
        if not self.latency_s or len(lengths) != 1 or 0 in lengths:
            raise ValueError("a latency profile needs the same non-empty range of batch sizes at every level")
        for level, row in self.latency_s.items():
            if not 0 <= level < self.steps:
                raise ValueError(f"level {level} outside 0..{self.steps - 1}")
            finite = all(math.isfinite(s) for s in row)  # NaN would pass every comparison below
            if not finite or row[0] <= 0 or any(b < a for a, b in itertools.pairwise(row)):
                raise ValueError(
                    f"level {level}: batch latencies must be finite, positive and not fall with batch size"
                )

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(sorted(self.latency_s))

    @cached_property  # read for every job the dispatcher routes
    def max_batch(self) -> int:
        return len(next(iter(self.latency_s.values())))

    @cached_property
    def at_any_steps(self) -> ProfileLatency:
        """Its times for images of any step count, fit once (about 150 us): GET /ready reads it at each call, and
        the dispatcher, the controller's demand and its SLO off the same profile."""
        return ProfileLatency(self)

    def latency(self, level: int, batch: int) -> float:
        if not 1 <= batch <= self.max_batch:
            raise ValueError(f"batch {batch} outside the profiled 1..{self.max_batch}")
        return self.latency_s[level][batch - 1]

    def best_batch(self, level: int, deadline_s: float) -> int:
        """The largest batch whose latency fits in `deadline_s`; 0 when not even one image does."""
        return _best_batch(self.latency_s[level], deadline_s)

    def capacity_rps(self, level: int, slo_s: float) -> float:
        """Images/s of one worker at the largest batch whose latency is under SLO/2 (Proteus).

        Half the SLO leaves the other half for queueing: a request may wait one
        whole batch before its own batch runs.
        """
        return _capacity_rps(self.latency_s[level], slo_s)

    def scaled(self, factor: float) -> LatencyProfile:
        """The same profile on a clock `factor` times as slow (the sim backend's --time-scale)."""
        factor = max(factor, 1e-6)  # a zero time scale still needs positive latencies
        table = {k: tuple(seconds * factor for seconds in row) for k, row in self.latency_s.items()}
        provenance = f"{self.provenance}; times {factor:g}"
        return replace(
            self,
            name=f"{self.name} x{factor:g}",
            latency_s=table,
            provenance=provenance,
            derivation=None,
            time_scale=self.time_scale * factor,
        )

    def limited_to(self, max_batch: int) -> LatencyProfile:
        """The profile of workers that run at most `max_batch` images at once."""
        if max_batch >= self.max_batch:
            return self
        table = {k: row[:max_batch] for k, row in self.latency_s.items()}
        provenance = f"{self.provenance}; batches up to {max_batch}"
        return replace(
            self, name=f"{self.name} (batch <= {max_batch})", latency_s=table, provenance=provenance, derivation=None
        )

    @classmethod
    def from_model(
        cls,
        name: str,
        provenance: str,
        *,
        fixed_s: float,
        step_s: float,
        batch_marginal: float,
        levels: Iterable[int],
        steps: int,
        max_batch: int,
    ) -> LatencyProfile:
        """latency(K, b) = (fixed_s + step_s * (steps - K)) * (1 + batch_marginal * (b - 1))."""
        table = {
            k: tuple(
                round((fixed_s + step_s * (steps - k)) * (1.0 + batch_marginal * (b - 1)), 6)
                for b in range(1, max_batch + 1)
            )
            for k in levels
        }
        derivation = {"fixed_s": fixed_s, "step_s": step_s, "batch_marginal": batch_marginal}
        return cls(name, steps, table, provenance, derivation)

    @classmethod
    def load(cls, path: str | Path) -> LatencyProfile:
        data = read_versioned(path, LATENCY_KIND)
        with fields_of(path):
            batches = data["batch_sizes"]
            if batches != list(range(1, len(batches) + 1)):
                raise ValueError("batch_sizes must be 1, 2, ..., n")
            table = {int(k): tuple(float(s) for s in row) for k, row in data["latency_s"].items()}
            # a file that says it holds other batch sizes than its rows do is spoiled: taken, the rows won
            if any(len(row) != len(batches) for row in table.values()):
                raise ValueError(f"latency_s rows must hold one latency per batch size {batches}")
            return cls(
                data["name"],
                denoising_steps(data["steps"]),
                table,
                data["provenance"],
                data.get("derivation"),
                float(data.get("time_scale", 1.0)),
                model_identity(data.get("model"), "model"),
            )

    @classmethod
    def bundled(cls, name: str = "sdxl_a100") -> LatencyProfile:
        return cls.load(DATA_DIR / f"{name}.json")

    def save(self, path: str | Path) -> None:
        payload = {
            "name": self.name,
            "steps": self.steps,
            "batch_sizes": list(range(1, self.max_batch + 1)),
            "latency_s": {str(k): list(self.latency_s[k]) for k in self.levels},
        }
        if self.derivation is not None:
            payload["derivation"] = dict(self.derivation)
        if self.time_scale != 1.0:
            payload["time_scale"] = self.time_scale
        if self.model is not None:
            payload["model"] = self.model
        write_versioned(path, LATENCY_KIND, self.provenance, payload)


class ProfileLatency:
    """Seconds of one batch, read from a latency profile, at any number of steps.

    On the profile's grid (its N, a profiled level K, batch 1..max_batch) it is the
    table's value. Off the grid:

    - another N, or a level the profile lacks: each batch size's column is
      fitted by least squares as fixed + per_step * steps_run over the profiled
      levels (steps_run = N - K), and the fit is evaluated at the batch's own
      N - K. Only the per-step part scales with the steps; the fixed part (text
      encoding, VAE decode) stays. Neither part is fitted below 0 (`_fit_steps`).
      A profile with a single level has nothing to fit: its one value is scaled in
      proportion to the steps run.
    - a batch above max_batch: extrapolated linearly from the last two batch
      sizes (from batch 1 and an empty batch of 0 s when only batch 1 was profiled).
    - a batch never takes less than a smaller one: each batch size has its own
      fit, and off the profiled steps a larger batch's may lie below a smaller's.

    For the bundled `sdxl_a100` profile, derived from such a line, the fit is exact.
    """

    def __init__(self, profile: LatencyProfile):
        self._profile = profile
        steps_run = np.array([profile.steps - k for k in profile.levels], dtype=np.float64)
        self._fits: list[tuple[float, float]] = []  # (fixed_s, per_step_s) per batch size
        for batch in range(1, profile.max_batch + 1):
            seconds = np.array([profile.latency(k, batch) for k in profile.levels])
            self._fits.append(_fit_steps(steps_run, seconds))

    def seconds(self, level: int, steps: int, batch: int) -> float:
        profile = self._profile
        top = profile.max_batch
        if batch < 1:  # off the profile's steps, batch 0 read the largest batch's line
            raise ValueError(f"batch {batch}: a batch holds at least one image")
        if batch > top:
            last = self.seconds(level, steps, top)
            before = self.seconds(level, steps, top - 1) if top > 1 else 0.0
            return last + (batch - top) * (last - before)
        if steps == profile.steps and level in profile.latency_s:
            return profile.latency(level, batch)
        # a level at or past the steps runs none of them (no policy picks one; the sum must not run backwards)
        steps_run = max(0, steps - level)
        # each batch size has its own line, and off the profiled steps a larger batch's may lie below a smaller's
        # (bundled tiny_cpu's batch 3 under its batch 2 below 12 steps run): a batch takes at least what any smaller
        # one does, as on the profile's own steps
        return max(fixed + per_step * steps_run for fixed, per_step in self._fits[:batch])

    def capacity_rps(self, level: int, steps: int, slo_s: float) -> float:
        """`LatencyProfile.capacity_rps` for images of `steps` steps: the same rule on their own batch times, over
        the profile's batch sizes (at the profile's N, the table's figure)."""
        return _capacity_rps([self.seconds(level, steps, b) for b in range(1, self._profile.max_batch + 1)], slo_s)


# relative: far below any real difference between a batch's time and an SLO, far above float rounding
_ROUNDING = 1e-9


def _best_batch(seconds_by_batch: Sequence[float], deadline_s: float) -> int:
    """The largest batch (1-based) whose seconds fit in `deadline_s`; 0 when not even one image does."""
    return max((b for b, seconds in enumerate(seconds_by_batch, start=1) if seconds <= deadline_s), default=0)


def _capacity_rps(seconds_by_batch: Sequence[float], slo_s: float) -> float:
    """Images/s at the largest batch whose seconds are under SLO/2; 0 when even one image's are not."""
    # a batch of SLO/2 to within rounding does not count: it leaves a request that waited one whole batch no time at
    # all, and which side of the line it fell was the rounding's to say. The default SLO, three exact images, is an
    # exact batch of 2 twice over: at --time-scale 0.01 and 0.3 it counted, at 1 and 0.1 not, and a sim engine planned
    # level 0 (and /ready's exact_capacity_rps, what loadgen's --load multiplies) a third faster at some than at others
    batch = _best_batch(seconds_by_batch, slo_s / 2.0 * (1.0 - _ROUNDING))
    return batch / seconds_by_batch[batch - 1] if batch else 0.0


def _fit_steps(steps_run: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """(fixed_s, per_step_s), both >= 0, fitting seconds = fixed_s + per_step_s * steps_run by least squares. Unbounded,
    the noise of a measured profile gave bundled tiny_cpu's batch 1 a fixed part of -0.12 s: every image of 1 to 4
    steps took 0 s, so a tiny engine planned for no demand at all under 2 images/s of 4-step images (161 ms each),
    and the dispatcher took a batch of them for free; a profile slower at higher levels fitted a negative per-step
    part, and a 150-step image cost nothing. With one bound crossed, the best fit lies on a bound: the line through
    0 (in proportion to the steps run), or a constant; the closer of the two is kept. A one-level profile has nothing
    to fit: it is taken in proportion."""
    through_zero = (0.0, float(seconds @ steps_run / (steps_run @ steps_run)))
    if len(seconds) == 1:
        return through_zero
    per_step, fixed = np.polyfit(steps_run, seconds, 1)
    if fixed >= 0 and per_step >= 0:
        return float(fixed), float(per_step)
    constant = (float(seconds.mean()), 0.0)
    return min((through_zero, constant), key=lambda fit: float(np.sum((fit[0] + fit[1] * steps_run - seconds) ** 2)))


# -- quality of the sim backend --------------------------------------------------------
@dataclass(frozen=True)
class QualityModel:
    """Modelled quality (percent of the exact K=0 image) for the `sim` backend.

    For level K > 0 with neighbour similarity s, and tau_K the embedder's
    threshold for K (its similarity table):

        loss(K, s)  = min(max_loss * K / K_top,  loss_at_threshold * exp((tau_K - s) / width))
        quality     = clip(100 - loss(K, s) + noise_sd * z(prompt_key), 0, 100)

    so quality is 100 - loss_at_threshold (95) at s = tau_K, rises towards 100
    as s rises past tau_K, falls (e-fold per `width` of similarity) below it,
    and never loses more than max_loss * K / K_top: an unrelated neighbour
    hurts more the more of its steps are reused. Because tau_K rises with K,
    quality falls with K at any s. z(prompt_key) is a standard normal drawn
    from a hash of the key: the same prompt always gets the same offset, at
    every level, so a prompt's quality still falls with K. K = 0 is exact:
    100, no noise. A miss (no neighbour) has no latent to resume from, so
    K > 0 without a similarity is an error.
    """

    table: SimilarityTable
    loss_at_threshold: float = 5.0
    width: float = 0.05
    max_loss: float = 40.0
    noise_sd: float = 1.2

    def expected(self, level: int, similarity: float | None) -> float:
        """The quality without the per-prompt noise."""
        if level == 0:
            return 100.0
        if similarity is None:
            raise ValueError(f"a miss (no cached neighbour) cannot be served at level {level}; it runs at 0")
        try:
            threshold, most_lost = self._per_level[level]
        except KeyError:
            raise KeyError(f"level {level} is not in the similarity table") from None
        gap = (threshold - similarity) / self.width
        # the cap is reached long before gap 50; clamping only keeps exp() from overflowing
        loss = min(most_lost, self.loss_at_threshold * math.exp(min(gap, 50.0)))
        return 100.0 - loss

    @cached_property
    def _per_level(self) -> dict[int, tuple[float, float]]:
        """Each level's (tau_K, the most it loses), worked out once: the engine estimates every image it serves with
        `expected` (engine/dispatch/dispatcher.py), where looking them up in the table took 1.2 us of its 1.5."""
        top = self.table.levels[-1]
        return {level: (threshold, self.max_loss * level / top) for threshold, level in self.table.thresholds}

    def quality(self, level: int, similarity: float | None, prompt_key: str) -> float:
        expected = self.expected(level, similarity)
        if level == 0:
            return expected
        return min(100.0, max(0.0, expected + self.noise_sd * prompt_offset(prompt_key)))


_STANDARD_NORMAL = NormalDist()


def prompt_offset(prompt_key: str) -> float:
    """A standard normal fixed by the key (blake2b, not Python's per-process salted hash)."""
    draw = int.from_bytes(hashlib.blake2b(prompt_key.encode(), digest_size=8).digest(), "little")
    # the hash as a uniform in (0, 1), through the inverse CDF: no generator built per image
    return _STANDARD_NORMAL.inv_cdf((draw + 0.5) / 2**64)


# -- degradation -----------------------------------------------------------------------
@dataclass(frozen=True)
class DegradationMatrix:
    """Expected quality of class K (prompts whose best level is K) served at level K'.

    Classes are the similarity bands of `table`. Class 0 (misses and neighbours
    below every threshold) may only be routed to 0 (`allowed`). The loss D[K'][K] is what
    class K gives up at K' against its exact image: q[K][0] - q[K'][K]. It grows
    with K', so a level below K* is a real gain when there is capacity for it.

    Class 0's quality at K' > 0 is that of a prompt whose neighbour is below every threshold, served from its latent
    all the same (a miss has none: it runs at 0). No plan routes class 0 there, but a policy that picks levels
    without the classes (Clipper-HT, Proteus) serves its far neighbours there, and its plan's expected quality
    counts them at it: counted at 100, Clipper-HT's plan expected 92 where its images were 63 (SIMULATED).
    """

    table: SimilarityTable
    quality_by_class: Mapping[int, Mapping[int, float]]  # class K -> level K' -> expected quality
    provenance: str
    model: str | None = None  # the model the qualities were measured on; None: modelled, or not said
    # the embedder model whose similarities classed the samples (QualitySample.embedder_identity); None: not said
    embedder_identity: str | None = None

    def __post_init__(self) -> None:
        levels = set(self.levels)
        if set(self.quality_by_class) != levels:
            raise ValueError(f"need a row for every class {sorted(levels)}")
        for k, row in self.quality_by_class.items():
            if set(row) != levels:
                raise ValueError(f"class {k} needs a quality at every level {sorted(levels)}")

    @property
    def levels(self) -> tuple[int, ...]:
        return self.table.levels

    def allowed(self, k_prime: int, k: int) -> bool:
        """Whether a plan may route class K to K' (class 0 only to 0: its neighbour, if any, is too far for any)."""
        return k_prime in self.quality_by_class[k] and (k > 0 or k_prime == 0)

    def quality(self, k_prime: int, k: int) -> float:
        return self.quality_by_class[k][k_prime]

    def loss(self, k_prime: int, k: int) -> float:
        if not self.allowed(k_prime, k):
            return math.inf
        return max(0.0, self.quality(0, k) - self.quality(k_prime, k))

    @classmethod
    def from_quality_model(
        cls, model: QualityModel, grid: int = 201, table: SimilarityTable | None = None
    ) -> DegradationMatrix:
        """Each class's quality averaged over its similarity band (uniform in s; class 0's, below the lowest
        threshold, for its far neighbours). `table`: the classes, some of the model's levels (default: the model's
        own table)."""
        table = table or model.table
        levels = table.levels
        rows: dict[int, dict[int, float]] = {}
        for k in levels:
            low, high = table.band(k)
            sims = np.linspace(low, high, grid)
            rows[k] = {kp: float(np.mean([model.expected(kp, float(s)) for s in sims])) for kp in levels}
        provenance = (
            f"sim QualityModel(loss_at_threshold={model.loss_at_threshold}, width={model.width}, "
            f"max_loss={model.max_loss}) averaged uniformly over each similarity band"
        )
        return cls(table, rows, provenance)

    @classmethod
    def from_samples(
        cls, samples: Iterable[QualitySample], table: SimilarityTable, provenance: str
    ) -> DegradationMatrix:
        """Mean measured quality per (class, level); level 0 is 100 unless measured.

        Above a class's own level the means are made non-increasing in K' (a
        running minimum), so noise in a measurement never makes a faster level
        look better than a slower one, which the MILP would exploit. Class 0 at a
        level no far neighbour was measured at takes the lowest class's quality
        there, capped as the rest: a bound from above (a farther neighbour does
        no better), where every class needs its own measurement at every level.
        """
        levels = table.levels
        # a threshold equal to a higher level's (what calibrating on few prompts may give) leaves its level a band of
        # no width: no similarity is of its class, and a profile was refused for measurements none could hold
        if empty := [k for k in levels[1:] if table.band(k)[0] >= table.band(k)[1]]:
            kept = ",".join(str(k) for k in levels[1:] if k not in empty)
            raise ValueError(
                f"levels {empty} have no band of similarity in the table (each threshold is a higher level's too), so"
                f" no sample is of their classes: cache without them (--levels {kept})"
            )
        sums: dict[tuple[int, int], list[float]] = defaultdict(list)
        for sample in samples:
            if sample.similarity is not None and sample.level in levels:
                sums[(table.level_for(sample.similarity), sample.level)].append(sample.quality)
        measured = {pair: float(np.mean(q)) for pair, q in sums.items()}
        missing = [(k, kp) for k in levels[1:] for kp in levels[1:] if (k, kp) not in measured]
        if missing:
            raise ValueError(f"no measured quality for (class, level) {missing}")
        rows: dict[int, dict[int, float]] = {}
        for k in levels:
            row = {0: measured.get((k, 0), 100.0)}
            row |= {kp: measured.get((k, kp), measured.get((levels[1], kp))) for kp in levels[1:]}
            floor = math.inf
            for kp in levels:
                if kp >= k:
                    floor = min(floor, row[kp])
                    row[kp] = floor
            rows[k] = row
        return cls(table, rows, provenance)

    @classmethod
    def load_profiled(cls, path: str | Path, table: SimilarityTable, embedder: str, steps: int) -> DegradationMatrix:
        """From `argus profile quality` output (see read_quality_samples for the formats). `table` is the similarity
        table of `embedder`, the engine's, whose levels are of `steps` steps: samples that say they are another
        embedder's, or of another step count, are refused."""
        samples = read_quality_samples(path)
        try:
            if not samples:  # not "no measured quality for (class, level)" and every one of them listed
                raise ValueError("holds no samples: give the JSONL `argus profile quality` wrote")
            made = made_with(samples)
            if problem := embedder_mismatch(made.embedder, embedder):
                raise ValueError(problem)  # its classes would be another embedder's bands of similarity
            if problem := steps_mismatch(made.steps, steps):
                raise ValueError(problem)
            matrix = cls.from_samples(samples, table, f"measured qualities from {Path(path).name}")
            return replace(matrix, model=made.model, embedder_identity=made.embedder_identity)
        except ValueError as error:  # a mismatch above, or a (class, level) it has none of: name the file
            raise ValueError(f"{path}: {error}") from None
