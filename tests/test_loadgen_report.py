"""Report arithmetic on synthetic records, and the figures written as PNGs that open."""

import json
import math
import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pictures import opens_as_png, png_title

from loadgen import cli
from loadgen.arrivals import Arrival
from loadgen.plot import bin_timeline, compare_plot, timeline_plot
from loadgen.records import OUTCOMES, Answer, ImageMeta, make_record
from loadgen.report import format_summary, read_records, summarize, write_records, write_summary
from loadgen.schedule_errors import cut_too_far
from loadgen.stats import P99_MIN_SAMPLES, median, p99_caveat, percentile

SLO_MS = 1000.0


def image(level=0, similarity=None, quality=None):
    return ImageMeta(level, similarity, quality, queue_ms=1.0, run_ms=100.0, worker="w0")


# (answer, latency_ms); None answer: nothing came back before the hard timeout
CASES = [
    (Answer("images", status=200, images=[image(0, None, 100.0)]), 200.0),
    (Answer("images", status=200, images=[image(0, None, 90.0)]), 400.0),
    (Answer("images", status=200, images=[image(10, 0.92, 80.0)]), 600.0),
    (Answer("images", status=200, images=[image(25, 0.97)]), 800.0),
    (Answer("images", status=200, images=[image(5, 0.7, 50.0)]), 1500.0),  # late
    (Answer("images", images=[image(0)]), 3000.0),  # late
    (Answer("busy", code="busy", status=429), 5.0),
    (Answer("error", code="deadline_exceeded", status=504), 1000.5),
    (Answer("error", code="no_worker", status=503), 50.0),
    (Answer("cancelled", code="cancelled"), 70.0),
    (None, None),
]


@pytest.fixture
def records():
    return [
        make_record(i, i % 3, i * 0.5, i * 0.5 + 0.001 * i, latency, answer, SLO_MS)
        for i, (answer, latency) in enumerate(CASES)
    ]


def test_outcomes_are_classified_and_add_up(records):
    assert [r["outcome"] for r in records] == [
        "ok", "ok", "ok", "ok", "late", "late", "rejected", "deadline_exceeded", "error", "cancelled", "error",
    ]  # fmt: skip
    assert records[-1]["code"] == "client_timeout" and records[-1]["latency_ms"] is None
    summary = summarize(records, slo_ms=SLO_MS, duration_s=10.0)
    assert summary["sent"] == len(records) == sum(summary["outcomes"].values())
    assert list(summary["outcomes"]) == list(OUTCOMES)
    assert summary["outcomes"] == {
        "ok": 4, "late": 2, "rejected": 1, "error": 2, "deadline_exceeded": 1, "cancelled": 1,
    }  # fmt: skip
    assert summary["error_codes"] == {
        "busy": 1, "deadline_exceeded": 1, "no_worker": 1, "cancelled": 1, "client_timeout": 1,
    }  # fmt: skip


def test_images_of_simulated_workers_are_labelled_so_in_the_summary(records):
    assert summarize(records, slo_ms=SLO_MS, duration_s=10.0)["simulated"] is False
    simulated = ImageMeta(0, None, 99.0, queue_ms=1.0, run_ms=100.0, worker="w0", simulated=True)
    record = make_record(0, 0, 0.0, 0.0, 10.0, Answer("images", images=[simulated]), SLO_MS)
    summary = summarize([record], slo_ms=SLO_MS, duration_s=1.0)
    assert record["simulated"] and summary["simulated"]
    assert "99 %  (SIMULATED workers: modelled)" in format_summary(summary)


def test_the_engines_estimate_is_summarised_apart_from_the_sim_workers_quality():
    """`quality` stays the sim workers' modelled figure (none from a real backend); the engine's estimate, which every
    image has, is its own figure."""
    measured = [
        ImageMeta(0, None, None, 1.0, 100.0, "w0", estimated_quality=100.0),
        ImageMeta(25, 0.97, None, 1.0, 100.0, "w0", estimated_quality=94.0),
    ]
    records = [make_record(i, 0, 0.0, 0.0, 10.0, Answer("images", images=[m]), SLO_MS) for i, m in enumerate(measured)]
    summary = summarize(records, slo_ms=SLO_MS, duration_s=1.0)
    assert (summary["mean_quality_pct"], summary["mean_estimated_quality_pct"]) == (None, 97.0)
    assert rows(format_summary(summary))["est. quality"] == "97 %  (the engine's estimate)"
    assert rows(format_summary(summary))["quality"] == "n/a"


def test_a_run_of_simulated_workers_says_so_above_its_figures():
    """Only the quality row said SIMULATED: the latencies and rates above it, a sim worker's scaled profile, read as
    measured."""
    simulated = ImageMeta(0, None, 99.0, queue_ms=1.0, run_ms=100.0, worker="w0", simulated=True)
    record = make_record(0, 0, 0.0, 0.0, 10.0, Answer("images", images=[simulated]), SLO_MS)
    lines = format_summary(summarize([record], slo_ms=SLO_MS, duration_s=1.0)).splitlines()
    assert rows(lines[0]) == {"SIMULATED": "figures from sim workers: run times a scaled profile, quality modelled"}
    measured = make_record(0, 0, 0.0, 0.0, 10.0, Answer("images", images=[image()]), SLO_MS)
    assert "SIMULATED" not in format_summary(summarize([measured], slo_ms=SLO_MS, duration_s=1.0))


def test_the_sent_line_says_what_span_its_rate_is_over_and_how_long_the_run_took():
    """--rate 2 --duration-s 1 --drain-s 2 printed 'sent 4 over 2.9 s (offered 5.76/s)': 2.9 s was the run to the
    end of its drain, 5.76/s the rate over the 0.52 s between the first send and the last."""
    sent_at = [0.34, 0.5133, 0.6867]
    served = [make_record(i, 0, t, t, 100.0, Answer("images", images=[image()]), None) for i, t in enumerate(sent_at)]
    unanswered = make_record(3, 0, 0.86, 0.86, None, None, None)
    summary = summarize([*served, unanswered], slo_ms=None, duration_s=2.9)
    assert summary["send_span_s"] == pytest.approx(0.52)
    assert rows(format_summary(summary))["sent"] == (
        "4 in 0.52 s from first to last send (offered 5.77/s); run 2.9 s to the end of its drain"
    )
    answered = summarize(served, slo_ms=None, duration_s=1.0)
    assert rows(format_summary(answered))["sent"].endswith("; run 1 s to its last answer")
    # one request has no rate: it printed 'offered n/a/s'
    one = summarize(served[:1], slo_ms=None, duration_s=0.5)
    assert rows(format_summary(one))["sent"] == "1 (no rate offered); run 0.5 s to its last answer"
    # two sent at one instant, the second unanswered when the run was stopped
    stopped = make_record(1, 0, 0.34, 0.34, None, Answer("cancelled", code="interrupted"), None)
    at_once = summarize([served[0], stopped], slo_ms=None, duration_s=0.7)
    assert (
        rows(format_summary(at_once))["sent"] == "2 at one instant (no rate offered); run 0.7 s to when it was stopped"
    )
    assert rows(format_summary(summarize([], slo_ms=None, duration_s=0.0)))["sent"] == "0 (no rate offered)"


def test_a_run_that_sent_nothing_prints_no_rate_with_a_unit():
    """Stopped before its first send (Ctrl-C, the first arrival later), the summary printed 'n/a/s'."""
    nothing = rows(format_summary(summarize([], slo_ms=None, duration_s=0.0, planned=2)))
    assert nothing["throughput"] == "n/a   goodput n/a"
    served = make_record(0, 0, 0.0, 0.0, 100.0, Answer("images", images=[image()]), None)
    assert rows(format_summary(summarize([served], slo_ms=None, duration_s=2.0)))["throughput"] == (
        "0.5/s   goodput 0.5/s"
    )


def test_a_run_stopped_before_its_first_send_says_how_long_it_ran_and_gives_no_throughput():
    """Stopped 30 s into a trace whose first arrival was later: its sent row said nothing of the 30 s, and over them its
    throughput of nothing sent would print '0/s', as if the engine had served none of what it was sent."""
    stopped = rows(format_summary(summarize([], slo_ms=None, duration_s=30.0, planned=2, stopped_s=30.0)))
    assert stopped["sent"] == "0 (no rate offered); run 30 s to when it was stopped, cut short: 2 planned"
    assert stopped["throughput"] == "n/a   goodput n/a"


def test_engine_times_are_recorded_to_the_microsecond_whichever_the_door():
    """Over HTTP the engine rounds queue_ms and run_ms to 3 decimals; over ZeroMQ they came as its floats
    (1.9954630006395746)."""
    meta = ImageMeta(0, None, None, queue_ms=1.9954630006395746, run_ms=100.00049999, worker="w0")
    record = make_record(0, 0, 0.0, 0.0, 10.0, Answer("images", images=[meta]), None)
    assert (record["queue_ms"], record["run_ms"]) == (1.995, 100.0)


def test_summary_arithmetic(records):
    summary = summarize(records, slo_ms=SLO_MS, duration_s=10.0)
    # (late + rejected + error + deadline_exceeded) / (sent - cancelled): cancelled counts on neither side
    assert summary["slo_violation_ratio"] == pytest.approx((2 + 1 + 2 + 1) / (11 - 1))
    assert summary["throughput_rps"] == pytest.approx(6 / 10.0)
    assert summary["goodput_rps"] == pytest.approx(4 / 10.0)
    # 11 requests 0.5 s apart: 2/s, as --rate counts it (sent / the last offset said 2.2)
    assert summary["offered_rps"] == pytest.approx(10 / 5.0)
    # nearest rank over the six image replies: 200 400 600 800 1500 3000
    assert (summary["latency_p50_ms"], summary["latency_p90_ms"], summary["latency_p99_ms"]) == (600, 3000, 3000)
    assert summary["mean_quality_pct"] == pytest.approx((100 + 90 + 80 + 50) / 4)
    assert summary["level_mix"] == pytest.approx({"0": 3 / 6, "5": 1 / 6, "10": 1 / 6, "25": 1 / 6})
    assert list(summary["level_mix"]) == ["0", "5", "10", "25"]
    assert summary["cache_hit_rate"] == pytest.approx(3 / 6)
    assert summary["max_send_lag_ms"] == pytest.approx(10.0)


def test_an_image_answered_in_exactly_the_slo_is_within_it():
    on_time, late = (
        make_record(0, 0, 0.0, 0.0, ms, Answer("images", images=[image()]), SLO_MS) for ms in (1000, 1000.5)
    )
    assert (on_time["outcome"], late["outcome"]) == ("ok", "late")


def test_a_record_counts_every_image_of_its_answer_and_none_of_a_refusal():
    two = make_record(0, 0, 0.0, 0.0, 50.0, Answer("images", images=[image(10, 0.9), image(0)]), SLO_MS)
    busy = make_record(1, 0, 0.0, 0.0, 5.0, Answer("busy", code="busy"), SLO_MS)
    assert (two["n_images"], two["level"], busy["n_images"]) == (2, 10, 0)  # the level is the first image's


def test_no_slo_means_nothing_is_late_and_no_quality_means_none(records):
    bare = [make_record(0, 0, 0.0, 0.0, 5000.0, Answer("images", images=[image(0)]), None)]
    summary = summarize(bare, slo_ms=None, duration_s=1.0)
    assert summary["outcomes"]["ok"] == 1 and summary["slo_violation_ratio"] == 0.0
    assert summary["mean_quality_pct"] is None and summary["offered_rps"] is None
    empty = summarize([], slo_ms=None, duration_s=0.0)
    assert empty["sent"] == 0 and empty["slo_violation_ratio"] is None and empty["throughput_rps"] is None
    assert empty["latency_p50_ms"] is None and empty["cache_hit_rate"] is None
    format_summary(empty)


def test_a_generator_behind_its_schedule_is_said_at_the_top_of_the_summary():
    """At 3,000 requests/s the generator sent 1.6 s late, and the summary's only sign of it was its last line."""
    on_time, late = (make_record(0, 0, 1.0, sent, 50.0, Answer("busy", code="busy"), None) for sent in (1.01, 1.5))
    assert "WARNING" not in format_summary(summarize([on_time], slo_ms=None, duration_s=2.0))
    lines = format_summary(summarize([on_time, late], slo_ms=None, duration_s=2.0)).splitlines()
    assert lines[1].startswith("WARNING") and "fell behind its schedule" in lines[1]


def test_latencies_are_printed_in_whole_milliseconds():
    """Printed to three significant digits, a p99 of 14,951 ms at a 15,000 ms SLO read 1.5e+04 ms: at the SLO."""
    served = make_record(0, 0, 0.0, 0.0, 14951.2, Answer("images", images=[image()]), 15000.0)
    text = format_summary(summarize([served], slo_ms=15000.0, duration_s=20.0))
    assert "p99 14,951 ms" in text and "(SLO 15,000 ms)" in text


def test_figures_of_a_thousand_and_more_are_printed_whole_not_as_powers_of_ten():
    """An hour of the code trace printed 'sent 1301 in 3.9e+03 s ... run 3.9e+03 s' and a generator 1.6 s behind
    'max send lag 1.6e+03 ms'; the line before the run 'from 0 s to 3.9e+03 s'."""
    served = [
        make_record(i, 0, i * 3.0, i * 3.0 + (1.6 if i == 5 else 0.0), 50.0, Answer("images", images=[image()]), None)
        for i in range(1301)
    ]
    shown = rows(format_summary(summarize(served, slo_ms=None, duration_s=3905.2)))
    assert shown["sent"] == "1301 in 3,900 s from first to last send (offered 0.333/s); run 3,905 s to its last answer"
    assert shown["max send lag"] == "1,600 ms"
    schedule = [Arrival(0.0), Arrival(3900.0)]
    assert cli._sending(schedule) == "2 requests from 0 s to 3,900 s (mean 0.000256/s)"
    assert cut_too_far(1.0, schedule[1:], "") == "--duration-s 1 keeps 0 of the 1 arrival: the first comes at 3,900 s"


def test_a_share_that_is_neither_none_nor_all_is_not_printed_as_either():
    """1 request late of 4,508 (the conv trace's figure in docs/loadgen.md) printed 'SLO violations 0.0%', and the one
    image of 300 resumed from the cache 'K=0: 100%  K=25: 0%'."""

    def served(n, late=0, hits=0):
        return [
            make_record(
                i,
                0,
                float(i),
                float(i),
                SLO_MS + 1 if i < late else 10.0,
                Answer("images", images=[image(25 * (i < hits))]),
                SLO_MS,
            )
            for i in range(n)
        ]

    shown = rows(format_summary(summarize(served(4508, late=1), slo_ms=SLO_MS, duration_s=4600.0)))
    assert shown["SLO violations"] == "0.02%  (SLO 1,000 ms)"
    shown = rows(format_summary(summarize(served(300, hits=1), slo_ms=SLO_MS, duration_s=310.0)))
    assert shown["level mix"] == "K=0: 99.7%  K=25: 0.3%" and shown["cache hits"] == "0.3%"
    assert shown["SLO violations"] == "0.0%  (SLO 1,000 ms)"  # none is still said as none


def test_a_p99_over_too_few_images_to_have_a_tail_says_it_is_their_max():
    """Over 26 images the p99 is the slowest of them; printed bare, it read as a tail only 1 in 100 passes."""

    def latency_row(images, failed=0):
        served = [
            make_record(i, 0, 0.0, 0.0, 10.0 + i, Answer("images", images=[image()]), SLO_MS) for i in range(images)
        ]
        busy = Answer("busy", code="busy")
        refused = [make_record(images + i, 0, 0.0, 0.0, 5.0, busy, SLO_MS) for i in range(failed)]
        return rows(format_summary(summarize([*served, *refused], slo_ms=SLO_MS, duration_s=1.0)))["latency"]

    assert latency_row(26, failed=200) == "p50 22 ms   p90 33 ms   p99 35 ms  (p99 of 26 samples is their max)"
    assert latency_row(1).endswith("p99 10 ms  (p99 of 1 sample is that sample)")
    assert latency_row(P99_MIN_SAMPLES) == "p50 59 ms   p90 99 ms   p99 108 ms"
    assert latency_row(0, failed=3) == "p50 n/a   p90 n/a   p99 n/a"


def test_cancelled_requests_are_left_out_of_the_violation_ratio_and_the_summary_says_so():
    """A run stopped with 8 requests in flight, cancelled, 1 rejected and 1 served: the ratio was 1 / 10, diluted
    by requests whose fate is unknown; it is 1 of the 2 that ended."""
    served = make_record(0, 0, 0.0, 0.0, 100.0, Answer("images", images=[image()]), SLO_MS)
    rejected = make_record(1, 0, 0.1, 0.1, 5.0, Answer("busy", code="busy", status=429), SLO_MS)
    cancelled = [
        make_record(i, 0, 0.1 * i, 0.1 * i, None, Answer("cancelled", code="interrupted"), SLO_MS) for i in range(2, 10)
    ]
    summary = summarize([served, rejected, *cancelled], slo_ms=SLO_MS, duration_s=1.0)
    assert summary["sent"] == sum(summary["outcomes"].values()) == 10 and summary["outcomes"]["cancelled"] == 8
    assert summary["slo_violation_ratio"] == 0.5
    assert "SLO violations  50.0% of the 2 not cancelled  (SLO 1,000 ms)" in format_summary(summary)
    # all cancelled: no ratio to give, not 0%
    only_cancelled = summarize(cancelled, slo_ms=SLO_MS, duration_s=1.0)
    assert only_cancelled["slo_violation_ratio"] is None
    assert "SLO violations  n/a: all 8 cancelled" in format_summary(only_cancelled)


def test_an_slo_and_latencies_under_a_millisecond_are_not_printed_as_0_ms():
    served = [make_record(i, 0, 0.0, 0.0, 0.25 + i, Answer("images", images=[image()]), 0.5) for i in range(2)]
    printed = rows(format_summary(summarize(served, slo_ms=0.5, duration_s=1.0)))
    assert printed["SLO violations"] == "50.0%  (SLO 0.5 ms)"
    assert printed["latency"].startswith("p50 0.25 ms ")


def test_the_printed_summary_says_why_requests_got_no_image():
    """The codes were only in the JSON: a run refused by the engine printed 'error 4' and nothing of why."""
    refused = [make_record(i, 0, 0.1 * i, 0.1 * i, 5.0, Answer("error", code="unauthorized"), SLO_MS) for i in range(3)]
    unanswered = make_record(3, 0, 0.3, 0.3, None, None, SLO_MS)
    served = make_record(4, 0, 0.4, 0.4, 100.0, Answer("images", images=[image()]), SLO_MS)
    printed = rows(format_summary(summarize([*refused, unanswered, served], slo_ms=SLO_MS, duration_s=1.0)))
    # under the outcomes, most frequent first
    assert list(printed)[1:3] == ["outcomes", "error codes"]
    assert printed["error codes"] == "unauthorized 3  client_timeout 1"
    assert "error codes" not in rows(format_summary(summarize([served], slo_ms=SLO_MS, duration_s=1.0)))


def test_without_an_slo_the_ratio_is_printed_as_what_failed_not_as_slo_violations():
    """With no --slo-ms, a run whose every request failed printed 'SLO violations 100.0% (SLO n/a)'."""
    failed = [make_record(i, 0, 0.1 * i, 0.1 * i, None, None, None) for i in range(4)]
    printed = rows(format_summary(summarize(failed, slo_ms=None, duration_s=1.0)))
    assert printed["failed"] == "100.0%  (rejected, error or deadline_exceeded; no SLO, so none late)"
    assert "SLO violations" not in printed
    # a request that came back, however slowly, is no failure without an SLO
    served = make_record(4, 0, 0.4, 0.4, 60000.0, Answer("images", images=[image()]), None)
    assert rows(format_summary(summarize([*failed, served], slo_ms=None, duration_s=1.0)))["failed"].startswith("80.0%")


def rows(printed):
    """The summary's lines by name: names and values are set apart by the padding of two spaces or more."""
    return dict(re.split(r" {2,}", line, maxsplit=1) for line in printed.splitlines())


def test_percentile_is_an_observed_value():
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50, empty=None) == 3.0
    assert percentile(list(range(1, 101)), 99, empty=None) == 99
    assert percentile([7.0], 90, empty=None) == 7.0
    # no values: the figure each caller chose, the summary's None or a bench's NaN
    assert percentile([], 50, empty=None) is None
    assert math.isnan(percentile([], 50, empty=math.nan))


def test_percentile_ranks_the_values_whatever_their_order_from_the_least_to_the_greatest():
    """Ranked in the order given, the p99 of latencies as they came was the last to come, not the slowest."""
    assert percentile([3.0, 1.0, 2.0], 99, empty=None) == 3.0
    assert percentile([3.0, 1.0, 2.0], 0, empty=None) == 1.0  # q runs from 0, the least
    assert percentile([3.0, 1.0, 2.0], 100, empty=None) == 3.0


def test_a_p99_is_said_to_be_the_max_for_exactly_the_counts_where_it_is():
    for n in range(1, 2 * P99_MIN_SAMPLES):
        assert bool(p99_caveat(n)) == (percentile(range(n), 99) == n - 1), n


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert math.isnan(median([]))


def test_records_and_summary_round_trip_through_files(records, tmp_path):
    samples = [(0.0, {0: 2}), (1.0, {0: 1, 25: 1})]
    summary = summarize(records, slo_ms=SLO_MS, duration_s=10.0, worker_levels=samples, worker_levels_source="plan")
    write_records(records, tmp_path / "r.jsonl")
    write_summary(summary, tmp_path / "s.json")
    assert read_records(tmp_path / "r.jsonl") == records
    assert json.loads((tmp_path / "s.json").read_text()) == summary
    assert summary["worker_levels"] == [[0.0, {"0": 2}], [1.0, {"0": 1, "25": 1}]]
    assert "SLO violations" in format_summary(summary)


def test_records_read_back_skip_blank_lines(records, tmp_path):
    """A records file ended or joined by hand (cat a b > c, an editor's last line) may hold blank lines."""
    path = tmp_path / "records.jsonl"
    write_records(records[:2], path)
    path.write_text(path.read_text() + "\n" + path.read_text() + "\n")
    assert read_records(path) == records[:2] * 2


def test_timeline_bins_what_each_second_of_sends_became(records):
    bins = bin_timeline(records, bin_s=1.0)
    assert list(bins.edges) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert list(bins.offered_rps) == [2, 2, 2, 2, 2, 1]
    assert list(bins.ok_rps) == [2, 2, 0, 0, 0, 0]
    # in percent, as workers report it: images without a quality left out, bins without images NaN
    assert list(bins.mean_quality[:3]) == [95.0, 80.0, 50.0]
    assert np.isnan(bins.mean_quality[3:]).all()
    # the fifth second's error and cancelled request: 1 of 1, the cancelled one left out as in the summary
    assert list(bins.violation_ratio) == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_timeline_bins_the_engines_estimate_where_the_workers_report_no_quality(tmp_path):
    """A real backend's images carry no quality of the workers', and the quality panel said "no quality reported"
    though every image carried the engine's estimate."""
    estimates = [(0.0, 100.0), (0.5, 94.0), (1.5, 90.0)]
    answers = [(sent, Answer("images", images=[replace(image(10, 0.9), estimated_quality=q)])) for sent, q in estimates]
    records = [make_record(i, 0, sent, sent, 10.0, answer, SLO_MS) for i, (sent, answer) in enumerate(answers)]
    bins = bin_timeline(records, bin_s=1.0)
    assert np.isnan(bins.mean_quality).all() and list(bins.mean_estimated_quality) == [97.0, 90.0]
    timeline_plot(records, tmp_path / "estimated.png", bin_s=1.0)
    assert opens_as_png(tmp_path / "estimated.png", wider_than=100)
    # records a loadgen wrote before the engine estimated quality have no such field
    older = [{k: v for k, v in r.items() if k != "estimated_quality"} for r in records]
    assert np.isnan(bin_timeline(older, bin_s=1.0).mean_estimated_quality).all()


def test_timeline_and_compare_plots(records, tmp_path):
    timeline_plot(records, tmp_path / "t.png", worker_levels=[(0.0, {"0": 2}), (3.0, {"0": 1, "25": 1})])
    timeline_plot(records, tmp_path / "no_levels.png", bin_s=1.0, title="no samples")
    assert opens_as_png(tmp_path / "t.png", wider_than=100) and opens_as_png(tmp_path / "no_levels.png", wider_than=100)
    summary = summarize(records, slo_ms=SLO_MS, duration_s=10.0)
    no_quality = {**summary, "mean_quality_pct": None}
    compare_plot({"argus": summary, "clipper-ha": no_quality}, tmp_path / "c.png", title="SIMULATED")
    assert opens_as_png(tmp_path / "c.png", wider_than=100)
    # the title is in the file too, where a program reads it
    assert png_title(tmp_path / "no_levels.png") == "no samples" and png_title(tmp_path / "c.png") == "SIMULATED"
    assert png_title(tmp_path / "t.png") is None


def test_a_workers_panel_of_polls_never_answered_draws_a_gap(records, tmp_path):
    """Empty samples (polls of an engine gone) draw nothing, and no legend of nothing (a matplotlib warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        timeline_plot(records, tmp_path / "gone.png", worker_levels=[(0.0, {}), (1.0, {})])
    assert opens_as_png(tmp_path / "gone.png", wider_than=100)


def test_the_summary_docs_loadgen_md_shows_is_what_its_figures_print():
    """Its example said 'run 1.9 s to its last answer' of a run with a client_timeout, which runs to the end of its
    drain, and whose 1.94 s prints as such (as its throughput, 26 images over 1.94 s, 13.4/s, says)."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "loadgen.md").read_text()
    shown = doc.split("(its figures are the JSON summary's, below; an example, against sim workers):\n\n```\n")[1]
    summary = summarize([], slo_ms=150.0, duration_s=1.94, planned=30)
    summary.update(
        sent=30,
        outcomes={"ok": 25, "late": 1, "rejected": 0, "error": 4, "deadline_exceeded": 0, "cancelled": 0},
        error_codes={"unauthorized": 3, "client_timeout": 1},
        send_span_s=1.75,
        offered_rps=29 / 1.75,
        throughput_rps=26 / 1.94,
        goodput_rps=25 / 1.94,
        slo_violation_ratio=5 / 30,
        latency_p50_ms=61.0,
        latency_p90_ms=118.0,
        latency_p99_ms=163.0,
        mean_quality_pct=98.6,
        mean_estimated_quality_pct=98.5,
        simulated=True,
        level_mix={"0": 13 / 26, "10": 2 / 26, "20": 1 / 26, "25": 10 / 26},
        cache_hit_rate=13 / 26,
        max_send_lag_ms=2.06,
    )
    assert shown.split("\n```")[0] == format_summary(summary)


def test_a_p99_of_few_samples_says_what_it_is_in_words_that_count():
    assert p99_caveat(P99_MIN_SAMPLES) == ""
    assert p99_caveat(2) == "p99 of 2 samples is their max"
    assert p99_caveat(1) == "p99 of 1 sample is that sample"  # "1 samples is their max"
