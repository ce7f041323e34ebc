"""A count and its noun in the messages argus writes: "1 request", "2 requests", where "1 requests" was said."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """`count` and `noun`, or for any count but 1 its `plural` (default: `noun` and an s)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
