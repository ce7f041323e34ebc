"""`argus COMMAND --help` names every flag's default (README.md says so): the formatter of every parser."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

BACKEND_HELP = "what a worker runs: tiny (a small random-weight SD-XL, CPU), sdxl (--model), sim (no model: SIMULATED)"
# where a backend is measured: the sim backend's quality is modelled, there is nothing of it to measure
MEASURED_BACKEND_HELP = "what the worker runs: tiny (a small random-weight SD-XL, CPU) or sdxl (--model)"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Ends a flag's help with its default, unless the help names its default itself: one worked out at run time
    (half the CPUs, the backend's), or one that must not be printed (an API key read from the environment).
    argparse's own ArgumentDefaultsHelpFormatter would print both, and "(default: None)" for every flag left unset."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default is argparse.SUPPRESS or default == []
        if unset or "default" in text.lower():
            return action.help
        return f"{text} (default %(default)s)".lstrip()


def command_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`parser` and every sub-command's parser under it: argparse passes none of a parser's settings (its formatter)
    on to them."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from command_parsers(sub)
