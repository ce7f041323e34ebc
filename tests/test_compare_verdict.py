"""The compare bench's verdict: fewer violations and more quality are better, small differences are ties."""

from loadgen.bench.compare_bench import QUALITY_TIE, VIOLATION_TIE, verdict


def row(violations: float, quality: float | None) -> dict:
    return {"slo_violation_ratio": violations, "mean_quality": quality}


def test_a_trade_is_better_on_one_and_worse_on_the_other():
    assert verdict(row(0.0, 98.8), row(0.0126, 100.0)) == "better: violations; worse: quality"


def test_differences_within_the_ties_count_for_nothing():
    argus = row(0.01, 98.0)
    close = row(0.01 + VIOLATION_TIE * 0.9, 98.0 + QUALITY_TIE * 0.9)
    assert verdict(argus, close) == "better: -; worse: -"


def test_dominating_a_baseline_on_both():
    assert verdict(row(0.0, 99.0), row(0.2, 90.0)) == "better: violations, quality; worse: -"


def test_a_run_with_no_images_has_no_quality():
    assert verdict(row(0.0, 99.0), row(1.0, None)) == "better: violations, quality; worse: -"
