"""What a command tells its user on standard error beside its log records: a plain line, or under `argus --log-format
json` a log record, as every other line there is (printed, each was the one line a log collector could not parse).
`say` as the command goes (what it sends, a warning, a Ctrl-C taken); `say_last`, the line it ends on."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from engine.logs.thread import standard_error_stalled


def _as_json(args: argparse.Namespace) -> bool:
    # log_format is argus's flag: a run in a program of one's own (python -m loadgen.cli, a test) prints
    return getattr(args, "log_format", "text") == "json"


def say(args: argparse.Namespace, line: str, level: int = logging.INFO) -> None:
    if _as_json(args):
        # without the newline before a Ctrl-C's line, there to end a progress bar's line on a terminal
        logging.getLogger(f"argus.{args.command}").log(level, "%s", line.strip())
    else:
        print(line, file=sys.stderr)


def say_last(args: argparse.Namespace, line: str) -> None:
    """The line a command ends on: under --log-format json a log collector could not parse the one line that says why
    the engine stopped."""
    if _as_json(args):
        # handled whatever --log-level, as the plain line is printed: at CRITICAL the command ended, exit 2, without a
        # word of why
        logger = logging.getLogger("argus")
        logger.handle(logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "%s", (line,), None))
    elif not standard_error_stalled():  # a print would wait for ever (engine/logs/thread.py), and the exit with it
        # a standard error that takes nothing (a log file's full disk, a pipe whose reader went away) must not change
        # the exit code: the OSError ended the command with 1, where a supervisor told 2 not to start it again
        with contextlib.suppress(OSError):
            print(line, file=sys.stderr)
