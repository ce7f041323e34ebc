"""argparse types for what a command cannot run with: numbers (finite, and above zero or from zero), and files to
write into a directory that is not there."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path


def _at_least_zero(kind: type, zero_allowed: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of `kind` above zero (or from zero)."""
    bound = ">= 0" if zero_allowed else "> 0"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {bound}, not {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed):
            raise argparse.ArgumentTypeError(f"expected a number {bound}, not {text!r}")
        return value

    parse.__name__ = f"{kind.__name__} {bound}"  # argparse names the type in its errors
    return parse


positive_int = _at_least_zero(int, zero_allowed=False)
positive_float = _at_least_zero(float, zero_allowed=False)
non_negative_int = _at_least_zero(int, zero_allowed=True)
non_negative_float = _at_least_zero(float, zero_allowed=True)


def output_file(text: str) -> str:
    """An argparse type: a file a command writes when it ends, checked now, not after a run that may take hours."""
    directory = Path(text).resolve().parent
    if not directory.is_dir():
        raise argparse.ArgumentTypeError(f"no directory {directory} to write {text} in")
    if not os.access(directory, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {directory}")
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    return text
