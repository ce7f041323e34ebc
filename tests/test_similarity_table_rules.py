"""A SimilarityTable's rules in process: the pairs it refuses (a level that is no resume point, one level twice),
a similarity exactly at a threshold (not past it), and the bands each level is given."""

import pytest

from controller.similarity import SimilarityTable

TABLE = SimilarityTable.from_pairs([(0.8, 10), (0.9, 20), (0.95, 25)])


@pytest.mark.parametrize(
    "pairs",
    [
        [(0.9, 10), (0.8, 0)],  # level 0 is a miss, given below every threshold: no threshold of its own
        [(0.9, 10), (0.8, 10)],  # one level, two thresholds
        [(0.8, 20), (0.9, 10)],  # the higher level past the lower similarity: 0.85 would be read as both
        [],
    ],
    ids=["level 0", "a level twice", "thresholds rising", "no pair"],
)
def test_a_table_refuses_pairs_it_could_not_read_one_way(pairs):
    with pytest.raises(ValueError):
        SimilarityTable(tuple(pairs))


def test_a_similarity_at_a_threshold_is_not_past_it():
    assert [TABLE.level_for(s) for s in (None, 0.8, 0.81, 0.9, 0.95, 0.96)] == [0, 0, 10, 10, 20, 25]


def test_each_level_has_the_band_up_to_the_next_levels_threshold():
    assert TABLE.levels == (0, 10, 20, 25)
    assert [TABLE.band(k) for k in TABLE.levels] == [(-1.0, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 1.0)]


def test_a_table_restricted_to_some_levels_keeps_their_thresholds_alone():
    assert TABLE.restricted([10, 25]).thresholds == ((0.95, 25), (0.8, 10))
    with pytest.raises(ValueError, match=r"levels \[0\] are not in"):
        TABLE.restricted([0, 10])
