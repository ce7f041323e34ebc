"""What `argus loadgen` tells its user on stderr as a run goes (what it sends, a warning, a Ctrl-C taken): a plain
line, or under `argus --log-format json` a log record, as every other line there is: printed, each was a line a log
collector could not parse."""

from __future__ import annotations

import argparse
import logging
import sys


def say(args: argparse.Namespace, line: str, level: int = logging.INFO) -> None:
    # log_format is argus's flag: a run in a program of one's own (python -m loadgen.cli, a test) prints
    if getattr(args, "log_format", "text") == "json":
        # without the newline before a Ctrl-C's line, there to end a progress bar's line on a terminal
        logging.getLogger("argus.loadgen").log(level, "%s", line.strip())
    else:
        print(line, file=sys.stderr)
