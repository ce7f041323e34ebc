"""Arrival traces from files, as schedules (see loadgen.arrivals).

Two formats, told apart by the first line:

- CSV with a header naming a `TIMESTAMP` column of wall-clock times with
  fractional seconds (`2023-11-16 18:17:03.9799600`, as the Azure traces in
  ../shared/data/traces), or ISO 8601 with a UTC offset (`...T18:17:03+01:00`,
  `...Z`; converted to UTC). Other columns are ignored: only arrival gaps matter
  for image serving. Offsets are taken from the first arrival, which is at 0.
- Plain `offset_ms[,prompt_index]` lines: milliseconds from the start of the
  run, optionally the index of the prompt to send. Blank lines and lines
  starting with `#` are skipped. Offsets are kept as written.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from loadgen.arrivals import Arrival, Schedule

TIMESTAMP = "TIMESTAMP"
# numpy reads a bare number as a year (epoch seconds, 1700000000, as the year 1.7e9) and wraps a year beyond
# datetime64[ns] (1678 to 2262) round without a word: a stamp must begin with a date and a time of day, in range
_STAMP = re.compile(r"(1[7-9]|2[01])\d\d-\d\d-\d\d[ T]\d\d:\d\d")


def load_trace(path: str | Path) -> Schedule:
    # utf-8-sig: a spreadsheet's export may start with a byte-order mark, which is not part of the first name
    with open(path, newline="", encoding="utf-8-sig") as f:
        first_line = f.readline()
        # the first line is put back in front, not read again: a pipe (`--trace <(zcat trace.csv.gz)`) cannot seek
        lines = itertools.chain([first_line], f)
        if TIMESTAMP in (name.strip() for name in next(csv.reader([first_line]), [])):
            schedule = _timestamp_csv(lines, path)
        else:
            schedule = _offsets(lines, path)
    if not schedule:
        raise ValueError(f"{path}: no arrivals")
    return schedule


def _timestamp_csv(lines: Iterable[str], path: str | Path) -> Schedule:
    reader = csv.reader(lines)
    header = [name.strip() for name in next(reader)]
    column = header.index(TIMESTAMP)
    lines, stamps = [], []
    try:
        for row in reader:
            if row:
                if len(row) <= column:
                    raise ValueError(f"{path}:{reader.line_num}: no {TIMESTAMP}")
                stamp = row[column].strip()
                if stamp and not _STAMP.match(stamp):
                    raise ValueError(
                        f"{path}:{reader.line_num}: {TIMESTAMP} {stamp!r} is not a date and time from the years "
                        "1700 to 2199 (YYYY-MM-DD HH:MM:SS.fffffff)"
                    )
                lines.append(reader.line_num)
                stamps.append(stamp)
    except csv.Error as exc:  # a field over the csv module's limit, as a stray quote makes of the rest of the file
        raise ValueError(f"{path}:{reader.line_num}: {exc}") from None
    with warnings.catch_warnings():
        # numpy parses the 7 fractional digits the Azure traces carry; datetime stops at 6. A stamp with a UTC offset
        # (+01:00, Z) it converts to UTC, which is what a gap needs: its warning that the result holds no zone was
        # printed, with a line of this file, above each run of such a trace, as if something were wrong with it
        warnings.filterwarnings("ignore", "no explicit representation of timezones", UserWarning)
        try:
            times = np.array(stamps, dtype="datetime64[ns]")
        except ValueError as error:
            # numpy names the stamp, not its line, which in a trace of a million rows is the one thing to know
            for line, stamp in zip(lines, stamps, strict=True):
                try:
                    np.datetime64(stamp, "ns")
                except ValueError as exc:
                    raise ValueError(f"{path}:{line}: unreadable {TIMESTAMP}: {exc}") from None
            raise ValueError(f"{path}: unreadable {TIMESTAMP}: {error}") from None
    missing = np.flatnonzero(np.isnat(times))
    if len(missing):  # numpy reads a blank cell as "not a time", which would sort as the earliest arrival
        raise ValueError(f"{path}:{lines[missing[0]]}: no {TIMESTAMP}")
    if not len(times):
        return []
    # a trace is a log of arrivals, so its order is time order whatever the file's
    times.sort()
    # subtracted as Python's ints: the stamps since the epoch fit int64 ns, but a span over 292 years (1700 to 2023)
    # does not, and numpy's difference wrapped round to negative offsets without a word
    stamps_ns = times.astype(np.int64).tolist()
    return [Arrival((ns - stamps_ns[0]) / 1e9) for ns in stamps_ns]


def _offsets(lines: Iterable[str], path: str | Path) -> Schedule:
    schedule: Schedule = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = [field.strip() for field in text.split(",")]
        try:
            if len(fields) > 2:
                raise ValueError("expected offset_ms[,prompt_index]")
            offset_ms = float(fields[0])
            prompt_index = int(fields[1]) if len(fields) == 2 else None
            if not math.isfinite(offset_ms) or offset_ms < 0 or (prompt_index is not None and prompt_index < 0):
                raise ValueError("offsets are finite numbers >= 0, prompt indices integers >= 0")
            if schedule and offset_ms / 1000.0 < schedule[-1].offset_s:
                raise ValueError("offsets must not decrease")
        except ValueError as exc:
            if not schedule:  # a CSV whose header lacks the column comes here, to fail on its header
                exc = f"neither offset_ms[,prompt_index] nor a CSV header with a {TIMESTAMP} column ({exc})"
            raise ValueError(f"{path}:{number}: {exc}: {text!r}") from None
        schedule.append(Arrival(offset_ms / 1000.0, prompt_index))
    return schedule
