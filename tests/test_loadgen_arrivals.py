"""Arrival processes and schedule transforms: rates, burstiness, bounds, determinism."""

from collections import Counter

import numpy as np
import pytest

from loadgen import arrivals
from loadgen.arrivals import (
    Arrival,
    compress_time,
    gamma,
    mean_rate,
    peak_to_mean,
    poisson,
    rescale_to_rate,
    shape,
    thin_to_rate,
    truncate,
)


def gaps(schedule):
    return np.diff([0.0] + [a.offset_s for a in schedule])


def cv(values):
    return float(np.std(values) / np.mean(values))


def test_poisson_mean_rate_and_cv():
    schedule = poisson(5.0, seed=1, max_requests=20_000)
    assert len(schedule) == 20_000
    # the standard error of the mean gap is 1/sqrt(n) = 0.7% here
    assert mean_rate(schedule) == pytest.approx(5.0, rel=0.03)
    assert cv(gaps(schedule)) == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize("target_cv", [0.5, 3.0])
def test_gamma_mean_rate_and_cv(target_cv):
    schedule = gamma(2.0, target_cv, seed=7, max_requests=50_000)
    assert mean_rate(schedule) == pytest.approx(2.0, rel=0.05)
    assert cv(gaps(schedule)) == pytest.approx(target_cv, rel=0.1)


def test_same_seed_same_schedule_other_seed_other_schedule():
    assert gamma(3.0, 2.0, seed=4, duration_s=60) == gamma(3.0, 2.0, seed=4, duration_s=60)
    assert gamma(3.0, 2.0, seed=4, duration_s=60) != gamma(3.0, 2.0, seed=5, duration_s=60)


def test_duration_bound_across_many_draw_blocks():
    schedule = poisson(1000.0, seed=2, duration_s=10.0)
    offsets = [a.offset_s for a in schedule]
    assert offsets == sorted(offsets) and 0 < offsets[0] and offsets[-1] <= 10.0
    assert len(schedule) == pytest.approx(10_000, rel=0.05)
    assert poisson(1000.0, seed=2, duration_s=10.0, max_requests=123) == schedule[:123]


def test_synthetic_processes_need_an_end_and_sane_parameters():
    with pytest.raises(ValueError, match="duration_s or max_requests"):
        poisson(1.0, seed=0)
    with pytest.raises(ValueError):
        poisson(0.0, seed=0, max_requests=3)
    with pytest.raises(ValueError):
        gamma(1.0, 0.0, seed=0, max_requests=3)


BURSTY = [Arrival(0.0, 4), Arrival(0.1), Arrival(0.2), Arrival(5.0, 1), Arrival(9.0)]


def test_rescale_to_rate_keeps_the_shape_and_the_prompt_indices():
    rescaled = rescale_to_rate(BURSTY, 2.0)
    assert mean_rate(BURSTY) == pytest.approx(4 / 9.0)
    assert mean_rate(rescaled) == pytest.approx(2.0)
    ratios = [b.offset_s / a.offset_s for a, b in zip(BURSTY[1:], rescaled[1:], strict=True)]
    assert ratios == pytest.approx([ratios[0]] * 4)
    assert [a.prompt_index for a in rescaled] == [4, None, None, 1, None]


def test_time_compression_and_truncation():
    assert [a.offset_s for a in compress_time(BURSTY, 0.1)] == pytest.approx([0.0, 0.01, 0.02, 0.5, 0.9])
    assert truncate(BURSTY, duration_s=5.0) == BURSTY[:4]
    assert truncate(BURSTY, max_requests=2) == BURSTY[:2]
    assert truncate(BURSTY, duration_s=5.0, max_requests=10) == BURSTY[:4]


def test_an_arrival_compressed_onto_the_duration_is_within_it():
    """3 s x --time-scale 0.1 is 0.30000000000000004 in floats: --duration-s 0.3 cut the arrival at 3 s, which
    --duration-s 3 keeps on the trace's own clock."""
    steady = [Arrival(float(s)) for s in range(200)]
    for scale in (1.0, 0.1, 0.025, 0.01):
        for seconds in range(1, 200):
            typed = round(seconds * scale, 9)  # the duration as written: 0.3, not 0.30000000000000004
            assert len(shape(steady, time_scale=scale, duration_s=typed)) == seconds + 1, (scale, typed)
    assert truncate(steady, duration_s=2.9999999) == steady[:3]


def test_shape_rescales_then_compresses_then_cuts():
    # rate 1/s over the whole schedule, replayed twice as fast: 2/s, then cut at 1.5 s of the run
    shaped = shape(BURSTY, rate=1.0, rescale="stretch", time_scale=0.5, duration_s=1.5)
    whole = compress_time(rescale_to_rate(BURSTY, 1.0), 0.5)
    assert mean_rate(whole) == pytest.approx(2.0)
    assert [a.offset_s for a in whole] == pytest.approx([0.0, 1 / 45, 2 / 45, 10 / 9, 2.0])
    assert shaped == whole[:4]


# a steady 10/s for 100 s with a 5-s burst at 50/s in the middle: a trace in miniature
TRACE = sorted(
    [Arrival(i / 10.0) for i in range(1000)] + [Arrival(50.0 + i / 40.0) for i in range(200)],
    key=lambda a: a.offset_s,
)


def test_thinning_keeps_the_clock_and_the_bursts_and_only_lowers_the_rate():
    thinned = thin_to_rate(TRACE, 1.2, seed=3)
    assert set(thinned) <= set(TRACE)  # the same instants, a subset of them
    assert mean_rate(thinned) == pytest.approx(1.2, rel=0.15)
    # the burst still lasts from 50 s to 55 s, where stretching would have made it ten times longer
    in_burst = [a for a in thinned if 50.0 <= a.offset_s < 55.0]
    assert len(in_burst) / 5.0 == pytest.approx(6.0, rel=0.35)
    assert peak_to_mean(thinned, 5.0) == pytest.approx(peak_to_mean(TRACE, 5.0), rel=0.35)
    assert thin_to_rate(TRACE, 1.2, seed=3) == thinned
    assert thin_to_rate(TRACE, 1.2, seed=4) != thinned


def test_the_busiest_minute_of_arrivals_too_far_out_for_a_minute_to_show_is_one_arrival():
    """From about 5.8e17 s (a trace line of 1e21 ms), an offset less 60 s rounds to the offset itself: the window
    ran past the last arrival, and `--load` on such a trace (loadgen's or bench compare's) was an IndexError
    traceback."""
    far = [Arrival(0.0), Arrival(1e18)]
    assert peak_to_mean(far) == pytest.approx((1 / 60) / mean_rate(far))


def test_a_steady_schedule_has_no_busier_minute_than_its_mean():
    """One arrival a second: a minute's window holds 60 of them, not 61 (the one exactly a minute before its end is
    outside it), else `--load` sized every steady trace 1.7% under the rate asked."""
    steady = [Arrival(float(t)) for t in range(600)]
    assert peak_to_mean(steady) == pytest.approx(1.0)
    assert peak_to_mean(steady, 10.0) == pytest.approx(1.0)


def test_thinning_above_the_schedules_rate_repeats_arrivals():
    doubled = thin_to_rate(TRACE, 2.5 * mean_rate(TRACE), seed=1)
    assert mean_rate(doubled) == pytest.approx(2.5 * mean_rate(TRACE), rel=0.05)
    assert {a.offset_s for a in doubled} <= {a.offset_s for a in TRACE}
    assert [a.offset_s for a in doubled] == sorted(a.offset_s for a in doubled)
    # every arrival twice, and half of them a third time
    original, repeated = Counter(TRACE), Counter(doubled)
    assert set(repeated) == set(original)
    assert all(2 * original[a] <= n <= 3 * original[a] for a, n in repeated.items())


def test_thinning_just_above_the_schedules_rate_keeps_all_of_it():
    """Not a reshuffle: two thinned copies at 1.001x would each drop half of the original."""
    a_little_more = thin_to_rate(TRACE, 1.001 * mean_rate(TRACE), seed=1)
    assert set(a_little_more) == set(TRACE)
    assert len(a_little_more) - len(TRACE) <= 0.01 * len(TRACE)


def test_a_schedule_too_large_to_hold_is_refused_before_it_is_drawn():
    with pytest.raises(ValueError, match="arrivals, more than"):
        poisson(1e12, seed=0, duration_s=1.0)
    with pytest.raises(ValueError, match="arrivals, more than"):
        thin_to_rate(TRACE, 1e12, seed=0)
    assert len(poisson(1e12, seed=0, max_requests=5)) == 5  # bounded by the count, not the rate


def test_thinning_is_refused_by_the_arrivals_it_makes_not_by_its_ratio(monkeypatch):
    """20 times a schedule of 10 is 200 arrivals, over a limit of 100, though the ratio of 20 is under it."""
    monkeypatch.setattr(arrivals, "MAX_ARRIVALS", 100)
    ten = [Arrival(float(t)) for t in range(10)]
    with pytest.raises(ValueError, match="about 200 arrivals, more than"):
        thin_to_rate(ten, 20.0, seed=0)


def test_a_schedule_bounded_by_its_count_is_not_refused_for_its_duration():
    """1e12/s for a second is too many to hold, but at most 5 of them are 5."""
    assert len(poisson(1e12, seed=0, duration_s=1.0, max_requests=5)) == 5


def test_a_duration_that_is_not_a_number_is_refused_not_drawn_forever():
    """No gap is ever past a NaN horizon, nor at or before it: the draws would never end."""
    with pytest.raises(ValueError, match="nan arrivals"):
        poisson(1.0, seed=0, duration_s=float("nan"))


def test_shape_thins_by_default_and_rejects_an_unknown_mode():
    assert shape(TRACE, rate=1.2, seed=3) == thin_to_rate(TRACE, 1.2, seed=3)
    with pytest.raises(ValueError, match="rescale must be one of thin, stretch"):
        shape(TRACE, rate=1.2, rescale="squeeze")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("end", [{"duration_s": 2.0}, {"max_requests": 5}])
def test_a_cv_so_large_most_of_its_gaps_round_to_zero_is_refused(end):
    """cv 1e6 rounds nearly every gap to 0: the draws never reached duration_s and took memory until none was left;
    with max_requests, all were drawn at one instant, and the run sent them at once, no rate offered."""
    said = "cv 1e\\+06 rounds more than half the gaps to 0 \\(100%\\): the arrivals would come in bursts at one instant"
    with pytest.raises(ValueError, match=f"^{said}, not at 5/s; ask for a cv of at most 32$"):
        arrivals.gamma(5.0, 1e6, seed=0, **end)
    # the share said is the share drawn: 50% at 32.8, where the refusals start
    gaps = np.random.default_rng(0).gamma(1 / 32**2, 1.0, 100_000)
    assert np.mean(gaps == 0) == pytest.approx(0.483, abs=0.01)
    assert len(arrivals.gamma(5.0, 32, seed=0, max_requests=5)) == 5


@pytest.mark.timeout(60)
def test_arrivals_a_large_cv_bunches_past_what_a_schedule_holds_are_refused_not_drawn_forever(monkeypatch):
    monkeypatch.setattr(arrivals, "MAX_ARRIVALS", 100)  # seed 9 draws 637 in 2 s at 5/s
    with pytest.raises(ValueError, match="cv 30 at rate 5/s draws more than 100 arrivals"):
        arrivals.gamma(5.0, 30, seed=9, duration_s=2.0)
