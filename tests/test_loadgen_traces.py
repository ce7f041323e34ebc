"""Trace files: the real Azure CSV read in place, and the offset_ms[,prompt_index] format."""

import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from loadgen.arrivals import mean_rate, rescale_to_rate, shape
from loadgen.traces import load_trace

TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
CODE = TRACES / "azure_llm2023_code.csv"


@pytest.fixture(scope="module")
def code_trace():
    return load_trace(CODE)


def test_azure_code_trace_head(code_trace):
    # the first rows are 18:17:03.9799600, 04.0319600, 04.0781490, 04.1206440
    assert [a.offset_s for a in code_trace[:4]] == pytest.approx([0.0, 0.052, 0.098189, 0.140684], abs=1e-9)
    assert all(a.prompt_index is None for a in code_trace[:100])
    with open(CODE) as f:
        rows = sum(1 for line in f if line.strip()) - 1
    assert len(code_trace) == rows


def test_azure_code_trace_is_as_bursty_as_documented(code_trace):
    gaps = np.diff([a.offset_s for a in code_trace])
    assert (gaps >= 0).all()
    # data/README.md: a mean of about 2.6 arrivals/s, inter-arrival CV about 13
    assert mean_rate(code_trace) == pytest.approx(2.6, abs=0.1)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(13, rel=0.1)


def test_rescaling_the_real_trace_to_a_target_rate_keeps_its_burstiness(code_trace):
    rescaled = rescale_to_rate(code_trace, 10.0)
    assert mean_rate(rescaled) == pytest.approx(10.0)
    before, after = np.diff([a.offset_s for a in code_trace]), np.diff([a.offset_s for a in rescaled])
    assert np.std(after) / np.mean(after) == pytest.approx(np.std(before) / np.mean(before))


def test_time_compression_of_the_real_trace(code_trace):
    fast = shape(code_trace, time_scale=0.1, max_requests=50)
    assert [a.offset_s for a in fast] == pytest.approx([a.offset_s * 0.1 for a in code_trace[:50]])


def test_offset_file(tmp_path):
    path = tmp_path / "offsets.txt"
    path.write_text("# offset_ms,prompt_index\n0\n\n250,3\n250.5, 1\n1000\n")
    schedule = load_trace(path)
    assert [a.offset_s for a in schedule] == pytest.approx([0.0, 0.25, 0.2505, 1.0])
    assert [a.prompt_index for a in schedule] == [None, 3, 1, None]


def test_arrivals_at_the_same_instant_are_kept(tmp_path):
    """Offsets must not decrease; two requests in the same millisecond are a burst, not a bad line."""
    path = tmp_path / "offsets.txt"
    path.write_text("0\n250\n250\n")
    assert [a.offset_s for a in load_trace(path)] == [0.0, 0.25, 0.25]


@pytest.mark.parametrize(
    "text, line",
    [
        ("0\n500\n400\n", 3),
        ("-5\n", 1),
        ("10,1,2\n", 1),
        ("abc\n", 1),
        ("10,-1\n", 1),
        ("0\n10,x\n", 2),
        ("0\nnan\n", 2),
        ("inf\n", 1),
    ],
)
def test_bad_offset_files_name_the_line(tmp_path, text, line):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"bad.txt:{line}:"):
        load_trace(path)


def test_timestamp_column_anywhere_and_rows_in_any_order(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "id,TIMESTAMP,extra\n"
        "a,2024-01-01 00:00:01.5000000,x\n"
        "b,2024-01-01 00:00:00.2500000,y\n"
        "c,2024-01-01 00:00:03.0000000,z\n"
    )
    assert [a.offset_s for a in load_trace(path)] == pytest.approx([0.0, 1.25, 2.75])


@pytest.mark.parametrize(
    "header",
    ["id,TIMESTAMP", '"id","TIMESTAMP"', "\ufeffTIMESTAMP,id", "id, TIMESTAMP "],
    ids=["plain", "quoted", "byte-order-mark", "spaced"],
)
def test_a_timestamp_header_however_a_csv_writer_spells_it(tmp_path, header):
    path = tmp_path / "t.csv"
    rows = ["a,2024-01-01 00:00:01", "b,2024-01-01 00:00:03"]
    if header.startswith("\ufeff"):
        rows = [",".join(reversed(row.split(","))) for row in rows]
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    assert [a.offset_s for a in load_trace(path)] == [0.0, 2.0]


@pytest.mark.parametrize("missing", ["b,", "b"], ids=["blank cell", "short row"])
def test_a_timestamp_row_without_a_time_names_its_line(tmp_path, missing):
    path = tmp_path / "t.csv"
    path.write_text(f"id,TIMESTAMP\na,2024-01-01 00:00:01\n{missing}\nc,2024-01-01 00:00:02\n")
    with pytest.raises(ValueError, match="t.csv:3: no TIMESTAMP"):
        load_trace(path)


def test_empty_trace_is_an_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no arrivals"):
        load_trace(path)


@pytest.mark.parametrize(
    "stamp", ["1700000000", "1700000000.25", "2024", "3000-01-01 00:00:00"], ids=["epoch", "epoch ms", "year", "far"]
)
def test_a_timestamp_numpy_would_misread_names_its_line(tmp_path, stamp):
    """numpy took epoch seconds for a year (1700000000 s to 1700000001 s became a year apart) and wrapped a year
    out of its range round: a silent run of a schedule the trace never held."""
    path = tmp_path / "t.csv"
    path.write_text(f"id,TIMESTAMP\na,2024-01-01 00:00:01\nb,{stamp}\n")
    with pytest.raises(ValueError, match=f"t.csv:3: TIMESTAMP '{stamp}' is not a date and time"):
        load_trace(path)


@pytest.mark.parametrize(
    "stamp", ["2024-01-01 00:00:02 UTC", "2024-01-01 00:00:02 +01:00", "2024-02-30 00:00"], ids=["zone", "gap", "day"]
)
def test_a_timestamp_numpy_cannot_parse_names_its_line(tmp_path, stamp):
    """It named the file alone: a reader of a trace of a million rows had to search for the one numpy quoted."""
    path = tmp_path / "t.csv"
    rows = "".join(f"r{i},2024-01-01 00:00:01\n" for i in range(50))
    path.write_text(f"id,TIMESTAMP\n{rows}b,{stamp}\nc,2024-01-01 00:00:03\n")
    with pytest.raises(ValueError, match="t.csv:52: unreadable TIMESTAMP"):
        load_trace(path)


def test_stamps_centuries_apart_keep_their_order(tmp_path):
    """1700 and 2023, both in range, are more nanoseconds apart than int64 holds: numpy's difference wrapped round to
    a negative offset, and the run said 'all arrivals are at the same instant'."""
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP\n1700-01-01 00:00:00\n2023-11-16 18:17:03\n2199-12-31 23:59:59\n")
    offsets = [a.offset_s for a in load_trace(path)]
    assert offsets == sorted(offsets) and offsets[0] == 0.0
    year_s = 365.2425 * 86400
    assert offsets[1] == pytest.approx(323.87 * year_s, rel=1e-4)
    assert offsets[2] == pytest.approx(500 * year_s, rel=1e-4)


@pytest.mark.parametrize("header", ["time,tokens", "timestamp,tokens", "id,time,tokens"])
def test_a_csv_without_a_timestamp_column_says_so(tmp_path, header):
    """It said only that 'time' could not be converted to a float."""
    path = tmp_path / "t.csv"
    path.write_text(f"{header}\n2024-01-01 00:00:01,3\n")
    with pytest.raises(ValueError, match=r"t.csv:1: neither offset_ms\[,prompt_index\] nor a CSV header with a TIME"):
        load_trace(path)


@pytest.mark.parametrize(
    "text", ["\ufeffid,TIMESTAMP\na,2024-01-01 00:00:01\nb,2024-01-01 00:00:03\n", "0\n2000\n"], ids=["csv", "offsets"]
)
def test_a_trace_read_from_a_pipe(tmp_path, text):
    """`--trace <(zcat trace.csv.gz)` or `--trace /dev/stdin`: the reader sought back to the start after its look at
    the first line, and a pipe cannot seek ('underlying stream is not seekable', exit 2)."""
    fifo = tmp_path / "trace"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=(text,), kwargs={"encoding": "utf-8"})
    writer.start()
    try:
        assert [a.offset_s for a in load_trace(fifo)] == [0.0, 2.0]
    finally:
        writer.join(timeout=10)


def test_iso_stamps_with_utc_offsets_are_read_as_utc_without_a_word(tmp_path):
    """The offsets were right, but numpy's warning that the result holds no time zone was printed, with a line of
    traces.py, above each run of such a trace."""
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP\n2024-01-01T10:00:00.5+01:00\n2024-01-01T09:00:01Z\n2024-01-01T04:00:03-05:00\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [a.offset_s for a in load_trace(path)] == [0.0, 0.5, 2.5]
