"""The picture formats a plot is written in, told by its file's name: `--plot run.pdf` wrote a PNG under that name
(exit 0), which no PDF reader opened. Kept apart from loadgen/plot.py, which imports matplotlib: the commands check a
--plot before their run, when nothing heavy is imported yet."""

from __future__ import annotations

import os
from pathlib import Path

# what matplotlib's Agg canvas writes with the figure's title in the file's own metadata, as the PNG's Title text
PLOT_FORMATS = ("png", "pdf", "svg")


def plot_format(path: str | Path) -> str:
    """The format `path`'s extension names; png for a name without one, or a stream (/dev/stdout, a FIFO, whatever
    its name), which no reader opens by its name. ValueError, naming the formats taken, for another extension: written
    as a PNG, it was a file its name's readers refuse."""
    suffix = Path(path).suffix.lower().removeprefix(".")
    if not suffix or (os.path.exists(path) and not os.path.isfile(path)):
        return "png"
    if suffix not in PLOT_FORMATS:
        taken = ", ".join(f".{fmt}" for fmt in PLOT_FORMATS)
        raise ValueError(f"--plot {path}: a plot is written as {taken} (by the name's extension), not .{suffix}")
    return suffix
