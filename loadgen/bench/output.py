"""How the benchmarks print and save their figures: plain tables with aligned columns, and JSON in which a figure that
could not be measured is null."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from engine.system.whole_files import written_or_exit, written_whole


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain text, columns aligned (numbers right, text left)."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) if rows else False for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def cell(value: Any) -> str:
    """A figure as a table prints it."""
    if value is None:  # a figure with nothing to take it over (a p99 of no images): printed 'None', as Python says it
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):  # a count, grouped as the floats beside it are: it printed 131072 above 138,240
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def write_json(path: str | None, data: dict) -> None:
    """A figure that could not be measured (NaN, infinite) is written null: JSON has no such numbers, and strict
    readers (jq, JavaScript) refuse a file that holds Python's NaN."""
    if not path:
        return

    def write() -> None:
        with written_whole(path) as f:
            json.dump(_finite_or_null(data), f, indent=2, allow_nan=False)
            f.write("\n")

    written_or_exit("argus bench", "JSON", path, write)
    print(f"JSON written to {path}")


def _finite_or_null(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value
