"""Similarity -> cache level K, one table per embedder.

A table maps each level K to the cosine similarity a cached neighbour must
exceed (strictly) for a new prompt to start from that neighbour's latent after K
steps. Similarities of different embedders live on different scales, so a table
belongs to one embedder and is never shared (docs/cache.md says how each was made).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from controller.similarity import SimilarityTable

LevelTable = Mapping[int, float]


def table_for(embedder: str) -> LevelTable:
    """The embedder's table from the one place tables live (controller/data/similarity_tables.json)."""
    try:
        table = SimilarityTable.bundled(embedder)
    except KeyError:
        raise ValueError(f"no level table for embedder {embedder!r}; calibrate one (argus calibrate)") from None
    return level_table(table)


def level_table(table: SimilarityTable) -> LevelTable:
    """The table by level: {K: the similarity a neighbour must exceed}."""
    return MappingProxyType({level: threshold for threshold, level in table.thresholds})


# NIRVANA (NSDI 2024) with CLIP ViT-L/14 text embeddings, which `argus calibrate --reference nirvana` applies as it
# stands; the other tables' provenance is in the data file
NIRVANA_CLIP: LevelTable = table_for("clip")


def allowed_level(similarity: float, table: LevelTable) -> int:
    """The highest level whose threshold the similarity exceeds; 0 (a full generation) if none."""
    return max((level for level, threshold in table.items() if similarity > threshold), default=0)


def level_for(similarity: float, table: LevelTable, stored_levels: Iterable[int]) -> int:
    """The highest level the table allows that the neighbour has a latent for; 0 is a miss.

    A lower level than the table allows is always safe (more of the steps are
    run with the new prompt), so a neighbour missing its level-20 latent still
    serves at 15 if it has that.
    """
    allowed = allowed_level(similarity, table)
    return max((level for level in stored_levels if 0 < level <= allowed), default=0)
