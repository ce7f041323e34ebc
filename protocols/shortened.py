"""Text a peer sent, shortened to quote it back or log it: a field, a reason or an identity may be megabytes long."""

from __future__ import annotations


def cut_middle(text: str, most: int, tail: int, mark: str = "...") -> str:
    """`text` if it is at most `most` characters; else its start and its last `tail` characters around `mark`, `most`
    characters in all (the start says what it is, the end often where: a field's name, a process's suffix)."""
    if len(text) <= most:
        return text
    return f"{text[: most - tail - len(mark)]}{mark}{text[-tail:]}"


def printable(text: str) -> str:
    """`text` with each character that is not printable escaped as Python writes it (a newline as \\n): in a log, a
    line break in a peer's text began a line of the peer's own, read as the engine's."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
