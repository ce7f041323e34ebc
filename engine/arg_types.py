"""argparse types for numbers a command cannot run with otherwise: finite, and above zero (or from zero)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


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
