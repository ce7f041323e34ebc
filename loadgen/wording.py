"""Counts in words: `1 worker`, `2 workers` (the reports printed `1 workers`, `sending 1 requests`)."""


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun, plural unless n is 1 (`plural` for a noun that does not take an s)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
