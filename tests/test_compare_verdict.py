"""The compare bench's verdict: fewer violations and more quality are better, small differences are ties, and a tie
says how far apart the two are all the same."""

import pytest

from loadgen.bench.compare_bench import QUALITY_TIE, VIOLATION_TIE, verdict


def row(violations: float, quality: float | None) -> dict:
    return {"slo_violation_ratio": violations, "mean_quality": quality}


def test_a_trade_is_better_on_one_and_worse_on_the_other():
    assert verdict(row(0.0, 98.8), row(0.0126, 100.0)) == "better violations, worse quality"


def test_a_tie_beside_a_loss_is_named_with_its_difference():
    """It said 'better: -; worse: violations' of a quality of 98.52 against 98.48, a tie it did not mention."""
    assert verdict(row(0.0600, 98.52), row(0.0400, 98.48)) == "worse violations, quality a tie (argus 0.04 higher)"
    assert verdict(row(0.0353, 98.85), row(0.0435, 98.60)) == "better violations, quality a tie (argus 0.25 higher)"
    assert verdict(row(0.0002, 99.15), row(0.0, 98.53)) == "better quality, violations a tie (argus 0.0002 higher)"


def test_differences_within_the_ties_are_a_tie_on_both_and_say_how_far_apart():
    argus = row(0.01, 98.0)
    close = row(0.01 + VIOLATION_TIE * 0.9, 98.0 - QUALITY_TIE * 0.9)
    assert verdict(argus, close) == "a tie on both (argus 0.0045 lower on violations, argus 0.45 higher on quality)"
    # what is equal as printed is left out, and two equal rows say so
    assert verdict(row(0.0011, 99.15), row(0.0011, 98.77)) == "a tie on both (argus 0.38 higher on quality)"
    assert verdict(row(0.0, 100.0), row(0.0, 100.0)) == "a tie on both (equal)"


@pytest.mark.parametrize(("argus_late", "baseline_late", "side"), [(3, 4, "lower"), (4, 3, "higher")])
def test_a_difference_of_the_tie_itself_is_a_tie(argus_late, baseline_late, side):
    """One request of 200 is a violation ratio of exactly 0.005 apart, within the tie; taken apart in floating point
    (0.02 - 0.015 is 0.005000000000000001) it was said 'better violations' (or worse)."""
    argus, baseline = row(argus_late / 200, 98.0), row(baseline_late / 200, 98.0)
    assert verdict(argus, baseline) == f"a tie on both (argus 0.0050 {side} on violations)"


@pytest.mark.parametrize(
    ("argus", "baseline", "said"), [((0.0, 99.0), (0.2, 90.0), "better"), ((0.2, 90.0), (0.0, 99.0), "worse")]
)
def test_better_or_worse_on_both(argus, baseline, said):
    assert verdict(row(*argus), row(*baseline)) == f"{said} on both"


def test_a_run_with_no_images_has_no_quality():
    assert verdict(row(0.0, 99.0), row(1.0, None)) == "better on both"


@pytest.mark.parametrize("cancelled", ["argus", "baseline"])
def test_a_run_whose_every_request_was_cancelled_gets_no_verdict(cancelled):
    """Its violation ratio is None (cancelled requests are not judged): the verdict raised a TypeError, and the
    table of the runs done was lost."""
    done, none = row(0.01, 98.0), row(None, None)
    argus, baseline = (none, done) if cancelled == "argus" else (done, none)
    assert verdict(argus, baseline) == "no verdict: a run whose every request was cancelled has no violation ratio"
