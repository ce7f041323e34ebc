"""A plot is written in the format its file's name says (.png, .pdf, .svg), and a name no such format takes is refused
before the run: `argus loadgen --plot run.pdf` wrote a PNG under that name, exit 0, which no PDF reader opened."""

import os

import pytest
from compare_runs import compare_argv

from engine.cli import build_parser
from engine.commands.arg_types import UsageError
from loadgen import cli
from loadgen.bench import compare_bench
from loadgen.plot import compare_plot, timeline_plot
from loadgen.plot_files import plot_format
from loadgen.records import Answer, ImageMeta, make_record
from loadgen.report import summarize

NO_ENGINE = "http://127.0.0.1:9"  # nothing listens: a refusal must come before the run reaches it
# how each format's file begins
MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml"}


def _records():
    image = ImageMeta(0, None, 100.0, 1.0, 10.0, "local-0/00000000", True)
    return [make_record(i, 0, i * 0.5, i * 0.5, 20.0, Answer("images", images=[image]), 100.0) for i in range(4)]


@pytest.mark.parametrize("suffix", ["png", "pdf", "svg", "PDF"])
def test_a_plot_is_written_in_the_format_its_name_says_its_title_in_it(suffix, tmp_path):
    records = _records()
    timeline = tmp_path / f"timeline.{suffix}"
    timeline_plot(records, timeline, title="SIMULATED timeline")
    bars = tmp_path / f"compare.{suffix}"
    compare_plot({"argus": summarize(records, slo_ms=100.0, duration_s=2.0)}, bars, title="SIMULATED bars")
    for path, title in ((timeline, b"SIMULATED timeline"), (bars, b"SIMULATED bars")):
        written = path.read_bytes()
        assert written.startswith(MAGIC[suffix.lower()]) and title in written


def test_a_plot_without_an_extension_or_to_a_stream_is_a_png(tmp_path):
    timeline_plot(_records(), tmp_path / "timeline")
    assert (tmp_path / "timeline").read_bytes().startswith(MAGIC["png"])
    fifo = tmp_path / "plot.pipe"  # a stream's name says nothing of what it carries
    os.mkfifo(fifo)
    assert plot_format(fifo) == plot_format("/dev/stdout") == "png"


def test_loadgen_refuses_a_plot_name_of_another_format_before_the_run(tmp_path, capsys):
    plot = tmp_path / "timeline.jpg"
    argv = ["--url", NO_ENGINE, "--no-progress", "--rate", "1", "--max-requests", "1", "--plot", str(plot)]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        f"argus loadgen: error: --plot {plot}: a plot is written as .png, .pdf, .svg (by the name's extension), not"
        " .jpg\n"
    )
    assert not plot.exists()


def test_bench_compare_refuses_a_plot_name_of_another_format_before_its_first_engine(tmp_path, monkeypatch):
    async def one_policy(*_):
        raise AssertionError("an engine was started")

    monkeypatch.setattr(compare_bench, "_one_policy", one_policy)
    plot = tmp_path / "compare.json"  # the --json meant, given to --plot
    args = build_parser().parse_args([*compare_argv(tmp_path), "--plot", str(plot)])
    with pytest.raises(UsageError, match=r"--plot .*compare\.json: a plot is written as \.png, \.pdf, \.svg"):
        compare_bench.run(args)
    assert not plot.exists()
