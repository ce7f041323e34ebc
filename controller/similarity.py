"""An embedder's similarity table: the cosine similarity above which a cached neighbour's latent
at level K keeps quality near the target (about 95%). Each embedder has its own table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controller.versioned import DATA_DIR, read_versioned

TABLES_FILE = DATA_DIR / "similarity_tables.json"


@dataclass(frozen=True)
class SimilarityTable:
    """(threshold, level) pairs, highest threshold first: similarity s > threshold -> level."""

    thresholds: tuple[tuple[float, int], ...]

    def __post_init__(self) -> None:
        sims = [s for s, _ in self.thresholds]
        levels = [k for _, k in self.thresholds]
        if not self.thresholds or any(k <= 0 for k in levels):
            raise ValueError("a similarity table needs (threshold, level > 0) pairs")
        if (
            sims != sorted(sims, reverse=True)
            or levels != sorted(levels, reverse=True)
            or len(set(levels)) != len(levels)
        ):
            raise ValueError(f"thresholds and levels must both fall, highest first: {self.thresholds}")

    @classmethod
    def from_pairs(cls, pairs: Iterable[Iterable[float]]) -> SimilarityTable:
        rows = sorted(((float(s), int(k)) for s, k in pairs), reverse=True)
        return cls(tuple(rows))

    @classmethod
    def bundled(cls, embedder: str = "clip") -> SimilarityTable:
        tables = _bundled_tables()
        if embedder not in tables:
            raise KeyError(f"no bundled similarity table for embedder {embedder!r}; have {sorted(tables)}")
        return cls.from_pairs(tables[embedder]["thresholds"])

    def restricted(self, levels: Iterable[int]) -> SimilarityTable:
        """The table of `levels` alone (an engine's `--levels`): a similarity past a level left out gives the next
        level down that is kept. Raises ValueError for a level the table has not got, or for none kept."""
        kept = set(levels)
        if unknown := kept - set(self.levels[1:]):
            raise ValueError(f"levels {sorted(unknown)} are not in the similarity table's {list(self.levels[1:])}")
        return SimilarityTable(tuple((s, k) for s, k in self.thresholds if k in kept))

    @property
    def levels(self) -> tuple[int, ...]:
        """Every level the table can give, 0 (a miss) included, ascending."""
        return (0, *sorted(k for _, k in self.thresholds))

    def level_for(self, similarity: float | None) -> int:
        if similarity is None:
            return 0
        for threshold, level in self.thresholds:
            if similarity > threshold:
                return level
        return 0

    def threshold(self, level: int) -> float:
        for threshold, k in self.thresholds:
            if k == level:
                return threshold
        raise KeyError(f"level {level} is not in the similarity table")

    def band(self, level: int) -> tuple[float, float]:
        """The similarities (low, high] that the table maps to `level`; level 0 is everything below the lowest."""
        if level == 0:
            return -1.0, self.thresholds[-1][0]
        above = [s for s, k in self.thresholds if k > level]
        return self.threshold(level), min(above, default=1.0)


def bundled_embedders() -> list[str]:
    """The embedders whose similarity tables are bundled, sorted."""
    return sorted(_bundled_tables())


def _bundled_tables() -> dict:
    return read_versioned(TABLES_FILE, "similarity_tables")["tables"]
