"""`argus bench controller`'s figures from made-up solve times: nearest-rank percentiles (docs/controller.md), each an
observed solve, the table's row and the JSON alike."""

from loadgen.bench.controller_bench import fleet_figures


def test_the_p50_of_an_even_count_of_solves_is_a_solve_that_was_timed():
    """statistics.median of 4 solves is the mean of the middle two: 2.5 ms, a time no solve took, and the MILP/LP
    ratio came from it."""
    row, result = fleet_figures(64, 6, [4.0, 1.0, 3.0, 2.0], [1.0, 2.0, 1.0, 2.0], ["optimal"] * 3 + [None])
    assert (result["solve_p50_ms"], result["solve_p99_ms"]) == (2.0, 4.0)
    assert (result["lp_p50_ms"], result["lp_p99_ms"]) == (1.0, 2.0)
    assert result["milp_to_lp_p50"] == 2.0
    assert (result["optimal"], result["solves"]) == (3, 4)
    assert row == [64, 6, 2.0, 4.0, 1.0, 2.0, 2.0, "3/4", "<= 100 (met)"]
