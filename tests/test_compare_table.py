"""`argus bench compare`'s table and JSON show the requests that got no image, and why; a figure with nothing to take
it over is n/a. A run whose every request was refused showed a row of None."""

import json

import pytest
from compare_runs import compare_argv, run_summary

from engine.cli import build_parser
from loadgen.bench import compare_bench
from loadgen.records import Answer, ImageMeta, make_record


def test_requests_without_an_image_are_counted_and_their_codes_said(tmp_path, monkeypatch, capsys):
    async def one_policy(policy, args, schedule, prompts, width, height, log_dir):
        return [], run_summary(len(schedule), "invalid_size" if policy == "clipper-ht" else None)

    monkeypatch.setattr(compare_bench, "_one_policy", one_policy)
    args = build_parser().parse_args([*compare_argv(tmp_path), "--json", str(tmp_path / "compare.json")])
    assert compare_bench.run(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("policy "))
    header, _, argus_row, refused_row = lines[at : at + 4]
    assert header.split()[1:3] == ["requests", "no_image"]
    requests = int(argus_row.split()[1])
    assert argus_row.split()[1:3] == [str(requests), "0"]
    assert refused_row.split()[1:3] == [str(requests), str(requests)]
    assert "None" not in out and "n/a" in refused_row
    assert f"clipper-ht: {requests} requests without an image: invalid_size {requests}" in out
    results = json.loads((tmp_path / "compare.json").read_text())["policies"]
    assert results["clipper-ht"]["no_image"] == requests and results["argus"]["no_image"] == 0
    assert results["clipper-ht"]["error_codes"] == {"invalid_size": requests}


def test_time_outside_the_queue_and_the_run_is_measured_and_named_when_it_weighs_on_the_slo(
    tmp_path, monkeypatch, capsys
):
    """The engine's own work and its messages take wall time, which the simulated clock multiplies by 1 /
    --time-scale: at 0.002, 2.1 s of each request, and the figures said nothing of it."""
    wall_outside_ms = {"argus": 2.5, "clipper-ht": 162.5}  # 100 ms and 6,500 ms of the simulated clock at 1/40

    async def one_policy(policy, args, schedule, prompts, width, height, log_dir):
        image = ImageMeta(0, None, 100.0, 10.0, 127.5, "local-0/00000000", True)
        records = [
            make_record(i, 0, 0.0, 0.0, 10.0 + 127.5 + wall_outside_ms[policy], Answer("images", images=[image]), None)
            for i in range(len(schedule))
        ]
        return records, run_summary(len(schedule))

    monkeypatch.setattr(compare_bench, "_one_policy", one_policy)
    args = build_parser().parse_args([*compare_argv(tmp_path), "--json", str(tmp_path / "compare.json")])
    assert compare_bench.run(args) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: clipper-ht: half the requests spent 6,500 ms")
    results = json.loads((tmp_path / "compare.json").read_text())["policies"]
    assert results["argus"]["unsimulated_p50_ms"] == pytest.approx(100.0)
    assert results["clipper-ht"]["unsimulated_p50_ms"] == pytest.approx(6500.0)


def test_the_mean_load_said_is_that_of_what_was_replayed(tmp_path, monkeypatch, capsys):
    """With --duration-s, the headline's mean load was the whole trace's: a busy first minute replayed alone, out of a
    trace that goes quiet after it, was said to offer a fraction of what it did."""

    async def one_policy(policy, args, schedule, prompts, width, height, log_dir):
        return [], run_summary(len(schedule))

    monkeypatch.setattr(compare_bench, "_one_policy", one_policy)
    trace = tmp_path / "busy_then_quiet.txt"
    busy, quiet = range(0, 60_000, 1_000), range(60_000, 660_000, 20_000)
    trace.write_text("".join(f"{offset}\n" for offset in [*busy, *quiet]))
    argv = [*compare_argv(tmp_path), "--trace", str(trace), "--duration-s", "60", "--json", str(tmp_path / "c.json")]
    assert compare_bench.run(build_parser().parse_args(argv)) == 0
    config = json.loads((tmp_path / "c.json").read_text())["config"]
    replayed = config["offered_rps"] / config["exact_capacity_rps"]
    assert replayed > 2 * config["mean_load"]  # the slice is busier than the trace
    assert f"({replayed:.2f}x on average over the 60 s replayed)" in capsys.readouterr().out


def test_a_p99_over_fewer_than_a_hundred_images_is_said_to_be_their_slowest(tmp_path, monkeypatch, capsys):
    """Printed bare beside the p50, the slowest of a short run's 38 images read as a tail figure; loadgen's summary and
    the other benches said so, the comparison did not. A policy with no image has no p99 (n/a), and a hundred images
    or more have one."""
    images = {"argus": 38, "clipper-ht": 0, "nirvana": 100}

    async def one_policy(policy, args, schedule, prompts, width, height, log_dir):
        return [], run_summary(images[policy] or 5, None if images[policy] else "deadline_exceeded")

    monkeypatch.setattr(compare_bench, "_one_policy", one_policy)
    args = build_parser().parse_args([*compare_argv(tmp_path), "--policies", "argus,clipper-ht,nirvana"])
    assert compare_bench.run(args) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "p99_ms" in line and "tail" in line]
    assert said == ["argus: p99_ms is no tail figure: p99 of 38 samples is their max"]
