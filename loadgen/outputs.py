"""The files `argus loadgen` writes when a run is over: the records, the summary and the plot, each whatever became
of the others."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from engine.logs.said import say
from loadgen.wording import counted

if TYPE_CHECKING:
    from loadgen.records import Record


def write_outputs(
    args: argparse.Namespace, records: list[Record], summary: dict[str, Any], records_stopped: list[OSError]
) -> list[str]:
    """Each file asked for, whatever became of the others (the records may fill a disk the summary fits on); why
    each that could not be written was not. `records_stopped`: why --records did not have each record as its request
    ended."""
    from engine.system.whole_files import is_stream
    from loadgen.report import SIMULATED_RUN, write_records, write_summary

    def plot(path: str) -> None:
        from loadgen.plot import MAX_BINS, timeline_plot

        source = summary["worker_levels_source"]
        drawn_s = timeline_plot(
            records,
            path,
            worker_levels=summary["worker_levels"],
            bin_s=args.bin_s,
            title=(f"{SIMULATED_RUN}: " if summary["simulated"] else "")
            + counted(len(records), "request")
            + (f", workers per level from /{source}" if source else ""),
        )
        if args.bin_s and drawn_s != args.bin_s:
            say(
                args,
                f"argus loadgen: note: the plot's bins are {drawn_s:g} s wide, not --bin-s {args.bin_s:g}: the run it"
                f" draws, to the last worker sample in the drain, would have been more than {MAX_BINS:,} of them",
            )

    # a pipe or a terminal (--records /dev/stdout) had each record as its request ended: only a file is written
    # again, in request order
    records_file = None if args.records is None or is_stream(args.records) else args.records
    failures = []
    if args.records and not records_file and records_stopped:  # a pipe that missed some has them no more
        failures.append(f"{args.records}: {records_stopped[0].strerror or records_stopped[0]}")
    for path, write in (
        (records_file, lambda path: write_records(records, path)),
        (args.json, lambda path: write_summary(summary, path)),
        (args.plot, plot),
    ):
        if path:
            try:
                write(path)
            except OSError as exc:  # a failed write's message names no file
                failures.append(f"{path}: {exc.strerror or exc}")
    return failures


def say_records_stopped(args: argparse.Namespace, error: OSError) -> None:
    from engine.system.whole_files import is_stream

    # only a file is written again at the end (write_outputs)
    path = args.records
    then = "what it missed is lost" if is_stream(path) else "they are written again, in full, at the end of the run"
    say(
        args,
        f"argus loadgen: warning: records are no longer written to {path} as requests end"
        f" ({error.strerror or error}): {then}",
        logging.WARNING,
    )
