"""Similarity -> level: the highest level the table allows that the neighbour still has."""

from __future__ import annotations

import pytest

from engine.cache.embedders import EMBEDDERS
from engine.cache.thresholds import NIRVANA_CLIP, level_for, table_for

ALL = (5, 10, 15, 20, 25)


@pytest.mark.parametrize(
    "similarity, stored, level",
    [
        (0.99, ALL, 25),
        (0.95, ALL, 20),  # the published thresholds are strict
        (0.93, ALL, 20),
        (0.86, ALL, 15),
        (0.80, ALL, 10),
        (0.70, ALL, 5),
        (0.65, ALL, 0),
        (0.99, (5, 15), 15),  # the level-25 latent is gone: the next lower one serves
        (0.80, (15, 20, 25), 0),  # only levels above what the similarity allows
        (0.99, (), 0),
    ],
)
def test_level_for_nirvana_table(similarity, stored, level):
    assert level_for(similarity, NIRVANA_CLIP, stored) == level


@pytest.mark.parametrize("embedder", EMBEDDERS)
def test_shipped_tables_are_monotone(embedder):
    table = table_for(embedder)
    assert sorted(table) == list(ALL)
    thresholds = [table[level] for level in ALL]
    assert thresholds == sorted(thresholds) and all(0 <= t < 1 for t in thresholds)


def test_unknown_embedder_has_no_table():
    with pytest.raises(ValueError, match="calibrate"):
        table_for("word2vec")
