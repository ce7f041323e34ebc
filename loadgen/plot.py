"""PNG figures of a run, in the style of the papers' timelines: panels over time sharing one axis.

Drawn on matplotlib's Agg canvas directly (no pyplot), so nothing global is
switched and no display is needed. Everything is binned by the time a request
was sent, so one bin shows what became of the load offered in it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.system.whole_files import written_whole
from loadgen.plot_files import plot_format
from loadgen.records import VIOLATIONS, Record

_BIN_CHOICES_S = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
_AUTO_BINS = 60
# a timeline cut finer than this is not a figure anyone can read, and it takes long to draw (60,000 bins: 2.7 s,
# 6,000: 0.45 s)
MAX_BINS = 10_000


def auto_bin_s(span_s: float) -> float:
    """The smallest of a few round widths giving at most 60 bins."""
    return next((b for b in _BIN_CHOICES_S if span_s / b <= _AUTO_BINS), _BIN_CHOICES_S[-1])


def _round_width_for(span_s: float, bins: int) -> float:
    """The smallest width of 1, 2 or 5 times a power of ten cutting `span_s` into at most `bins`."""
    power = 10.0 ** math.floor(math.log10(span_s / bins))
    return next(w for w in (power * m for m in (1, 2, 5, 10)) if span_s / w <= bins)


@dataclass(frozen=True)
class TimelineBins:
    """A run binned by the time each request was sent: per bin, requests per second and shares."""

    edges: np.ndarray  # bin boundaries, seconds since the start
    width_s: float
    offered_rps: np.ndarray
    ok_rps: np.ndarray  # answered with images within the SLO
    mean_quality: np.ndarray  # percent of the exact image, over the images answered; NaN for a bin without
    mean_estimated_quality: np.ndarray  # the engine's estimate of it, as mean_quality
    violation_ratio: np.ndarray  # over the requests not cancelled; NaN for a bin with none


def bin_timeline(
    records: Sequence[Record], *, span_s: float = 0.0, bin_s: float | None = None, max_bins: int = MAX_BINS
) -> TimelineBins:
    """`span_s`: draw at least this far (the last worker sample may come after the last request). A `bin_s` cutting
    the whole span into more than `max_bins` is widened to the smallest round width that does not (see width_s)."""
    sent = np.array([r["sent_at"] for r in records], dtype=float)
    span = max(float(sent.max()) if len(sent) else 0.0, span_s)
    width = bin_s or auto_bin_s(span)
    if span / width > max_bins:
        width = _round_width_for(span, max_bins)
    edges = np.arange(max(1, math.ceil(span / width)) + 1) * width
    which = np.clip(np.digitize(sent, edges) - 1, 0, len(edges) - 2)

    def per_bin(mask: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """Sum of values (count if None) over the records in `mask`, per bin."""
        weights = None if values is None else values[mask]
        return np.bincount(which[mask], weights=weights, minlength=len(edges) - 1).astype(float)

    outcome = np.array([r["outcome"] for r in records])
    offered = per_bin(np.ones(len(records), dtype=bool))
    answered = np.isin(outcome, ("ok", "late"))

    def mean_over_answered(field: str) -> np.ndarray:
        """Per bin, the mean of a percentage the replies carry (None where one does not say it). Records written by
        a loadgen before the engine estimated quality have no estimate."""
        values = np.array([np.nan if r.get(field) is None else r[field] for r in records], dtype=float)
        says = answered & ~np.isnan(values)
        with np.errstate(invalid="ignore", divide="ignore"):
            return per_bin(says, values) / per_bin(says)

    with np.errstate(invalid="ignore", divide="ignore"):
        # as the summary's, over the requests not cancelled
        violation_ratio = per_bin(np.isin(outcome, VIOLATIONS)) / per_bin(outcome != "cancelled")
    return TimelineBins(
        edges,
        width,
        offered / width,
        per_bin(outcome == "ok") / width,
        mean_over_answered("quality"),
        mean_over_answered("estimated_quality"),
        violation_ratio,
    )


def timeline_plot(
    records: Sequence[Record],
    path: str | Path,
    *,
    worker_levels: Sequence[tuple[float, Mapping[Any, int]]] = (),
    bin_s: float | None = None,
    title: str | None = None,
) -> float:
    """Offered load and goodput, mean quality, SLO violation ratio, and (given samples) workers per level; returns
    the bin width drawn, wider than `bin_s` when that cut the run, to its last sample, into more than MAX_BINS."""
    last_sample = max((t for t, _ in worker_levels), default=0.0)
    bins = bin_timeline(records, span_s=last_sample, bin_s=bin_s)
    edges = bins.edges

    panels = 4 if worker_levels else 3
    figure = Figure(figsize=(9, 2.2 * panels), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, sharex=True)

    load = axes[0]
    load.stairs(bins.offered_rps, edges, fill=True, color="lightgray", label="offered")
    load.stairs(bins.ok_rps, edges, baseline=None, color="tab:blue", label="ok within SLO")
    load.set_ylabel("req/s")
    load.legend(loc="upper right", fontsize="small")

    _quality_panel(axes[1], bins)

    slo = axes[2]
    slo.stairs(bins.violation_ratio, edges, baseline=None, color="tab:red")
    slo.set_ylim(-0.02, 1.02)
    slo.set_ylabel("SLO violation\nratio")

    if worker_levels:
        _workers_panel(axes[3], worker_levels, float(edges[-1]))
    axes[-1].set_xlabel(f"time since start (s), bins of {bins.width_s:g} s")
    axes[-1].set_xlim(0, edges[-1])
    _save(figure, path, title)
    return bins.width_s


def _quality_panel(ax, bins: TimelineBins) -> None:
    """The quality the workers measured (sim workers' modelled figure; a real backend measures none) and the engine's
    estimate of each image, which every backend's replies carry."""
    drawn = False
    for means, color, style, label in (
        (bins.mean_quality, "tab:green", "solid", "reported by the workers"),
        (bins.mean_estimated_quality, "tab:olive", "dashed", "the engine's estimate"),
    ):
        if not np.isnan(means).all():
            ax.stairs(means, bins.edges, baseline=None, color=color, linestyle=style, label=label)
            drawn = True
    if drawn:
        ax.legend(loc="lower right", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no quality reported", transform=ax.transAxes, ha="center", va="center", color="gray")
    ax.set_ylabel("quality (%)")


def _workers_panel(ax, samples: Sequence[tuple[float, Mapping[Any, int]]], end: float) -> None:
    """Stacked: each sample holds until the next one, the last until the end of the axis; an empty one (a poll that
    had no answer) draws nothing, a gap."""
    edges = np.array([t for t, _ in samples] + [max(end, samples[-1][0])], dtype=float)
    levels = sorted({int(k) for _, counts in samples for k in counts})
    below = np.zeros(len(samples))
    for level in levels:
        count = np.array([_count(counts, level) for _, counts in samples], dtype=float)
        ax.stairs(below + count, edges, baseline=below, fill=True, label=f"K={level}")
        below = below + count
    ax.set_ylabel("workers")
    if levels:  # else no poll was answered: a legend of nothing is a matplotlib warning
        ax.legend(loc="upper right", fontsize="small", ncols=min(len(levels), 6))
    else:
        ax.text(0.5, 0.5, "no worker count read", transform=ax.transAxes, ha="center", va="center", color="gray")


def _count(counts: Mapping[Any, int], level: int) -> int:
    # samples straight from the sampler have int keys, samples read back from JSON str keys
    return int(counts.get(level, counts.get(str(level), 0)))


def compare_plot(
    summaries_by_policy: Mapping[str, Mapping[str, Any]], path: str | Path, *, title: str | None = None
) -> None:
    """Bars per policy: SLO violation ratio and mean quality (a policy without quality gets no bar)."""
    names = list(summaries_by_policy)
    violations = [_or_nan(s.get("slo_violation_ratio")) * 100.0 for s in summaries_by_policy.values()]
    quality = [_or_nan(s.get("mean_quality_pct")) for s in summaries_by_policy.values()]
    figure = Figure(figsize=(max(5.0, 1.3 * len(names) + 2), 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True)
    for ax, values, label, color in (
        (top, violations, "SLO violations (%)", "tab:red"),
        (bottom, quality, "mean quality (%)", "tab:green"),
    ):
        bars = ax.bar(names, [0.0 if math.isnan(v) else v for v in values], color=color)
        ax.bar_label(bars, labels=["n/a" if math.isnan(v) else f"{v:.1f}" for v in values], fontsize="small")
        ax.set_ylabel(label)
        ax.margins(y=0.15)
        ax.set_ylim(bottom=0)
    _save(figure, path, title, fontsize="small")


def _save(figure: Figure, path: str | Path, title: str | None, **title_style: Any) -> None:
    """In the format `path` names (plot_format). The title goes above the panels and into the file's Title text too,
    where a program (or a test) reads it. Written whole: saved in place, a full disk left the first part of a PNG where
    the last plot was."""
    fmt = plot_format(path)
    if title:
        figure.suptitle(title, **title_style)
    with written_whole(path, binary=True) as f:
        figure.savefig(f, format=fmt, dpi=110, metadata={"Title": title} if title else None)


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
