"""The name a command's usage errors are said under, as argparse says its own."""

from __future__ import annotations


def command_name(argv: list[str]) -> str:
    """The command's full name: `argus profile quality`, not `argus profile`."""
    return "argus " + " ".join(argv[: 2 if argv[0] in ("profile", "bench") else 1])
