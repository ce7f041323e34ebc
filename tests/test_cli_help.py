"""`argus COMMAND --help` lists a command's flags and their defaults, as README.md says; it lists no secret."""

import argparse
import importlib.metadata
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, name: str = "argus") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def _has_default(action: argparse.Action) -> bool:
    default = action.default
    return not (default is None or default is False or default is argparse.SUPPRESS or default == [])


def _help_of(help_text: str, flag: str) -> str:
    """The lines `--help` prints for one flag: from its own to the next flag's (or the end of its group)."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(flag) and line.startswith("  -"))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("   "):  # the next flag ("  -...") or group, or a blank line
            break
        block.append(line)
    return " ".join(" ".join(block).split())


def _flags_with_defaults() -> list[tuple[str, str, str]]:
    return [
        (name, action.option_strings[-1], parser.format_help())
        for name, parser in _parsers(build_parser())
        for action in parser._actions
        if action.option_strings and _has_default(action)
    ]


def test_every_flag_with_a_default_names_it_in_help():
    """Before, `argus serve --help` named no default for --port, --workers, --backend, --max-queue, --window-s,
    --cache-bytes, the timeouts and more (50 flags over the commands): a user had to read the code."""
    missing = [f"{name} {flag}" for name, flag, text in _flags_with_defaults() if "default" not in _help_of(text, flag)]
    assert not missing, missing


def test_version_says_the_installed_version():
    command = [sys.executable, "-m", "engine.cli", "--version"]
    said = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    assert said == f"argus {importlib.metadata.version('argus-serve')}\n"


@pytest.fixture(scope="module")
def serve_help() -> str:
    command = [sys.executable, "-m", "engine.cli", "serve", "--help"]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.mark.parametrize(
    ("flag", "shown"),
    [
        ("--port", "(default 8000)"),
        ("--workers", "(default 2)"),
        ("--backend", "(default tiny)"),
        ("--max-queue", "(default 1024)"),
        ("--client-listen", "default tcp://127.0.0.1:5555"),
        ("--worker-listen", "default tcp://127.0.0.1:5556"),
        # it said "every HTTP route but /health": the image URLs need no key either
        ("--api-key", "every HTTP route but /health and the image URLs that response_format url hands out"),
    ],
)
def test_serve_help_shows_the_defaults_the_readme_names(serve_help, flag, shown):
    assert shown in _help_of(serve_help, flag)


def test_an_api_key_from_the_environment_is_not_printed(monkeypatch):
    """A default taken from $ARGUS_API_KEY is a secret: help names the variable, never its value."""
    monkeypatch.setenv("ARGUS_API_KEY", "not-for-help-output")
    for name, parser in _parsers(build_parser()):
        assert "not-for-help-output" not in parser.format_help(), name


_ROOT = Path(__file__).resolve().parent.parent
# flags of the other programs the docs show beside argus's: Slurm's srun, `ray start`
_OTHER_PROGRAMS_FLAGS = {"--ntasks", "--gpus-per-task", "--head", "--node-ip-address"}
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?![\w-])")
# `argus [--log-level L] COMMAND ...` to the end of its inline code, line (or `\` continuation) or table cell (a `|`
# after a space; `tiny|sdxl` is a choice)
_COMMAND_LINE = re.compile(
    r"argus (?:--log-(?:level|format) \w+ )*((?:bench |profile )?[a-z-]+)((?:\\\n|[^\n`|]|(?<! )\|)*)"
)


def _doc_texts() -> dict[str, str]:
    return {path.name: path.read_text() for path in [_ROOT / "README.md", *sorted((_ROOT / "docs").glob("*.md"))]}


def _flags_by_command() -> dict[str, set[str]]:
    return {
        name: {flag for action in parser._actions for flag in action.option_strings}
        for name, parser in _parsers(build_parser())
    }


def test_every_flag_the_docs_name_is_one_a_command_takes():
    known = set().union(*_flags_by_command().values()) | _OTHER_PROGRAMS_FLAGS
    named = {(doc, flag) for doc, text in _doc_texts().items() for flag in _FLAG.findall(text)}
    assert not sorted((doc, flag) for doc, flag in named if flag not in known)


def test_a_command_line_in_the_docs_gives_each_flag_to_the_command_that_takes_it():
    flags_of = _flags_by_command()
    misplaced = []
    for doc, text in _doc_texts().items():
        for match in _COMMAND_LINE.finditer(text):
            command = f"argus {match.group(1)}"
            if command not in flags_of:  # prose: "argus serves", "argus alone"
                continue
            # up to a comment or the prose after the command: what follows `# `, `(`` or `;` is no flag of it
            line = re.split(r"\s#\s|\(`|;", match.group(2))[0]
            misplaced += [(doc, command, flag) for flag in _FLAG.findall(line) if flag not in flags_of[command]]
    assert not misplaced


def test_a_command_that_runs_no_sim_backend_says_nothing_of_one():
    """`argus profile quality` offers tiny and sdxl alone (a sim worker's quality is its model), yet its --device said
    'none for sim' and its --threads 'not for sim'."""
    said = [
        name
        for name, parser in _parsers(build_parser())
        for action in parser._actions
        if action.dest == "backend" and action.choices and "sim" not in action.choices
        if re.search(r"\bsim\b", parser.format_help())
    ]
    assert not said, said


@pytest.mark.parametrize(
    ("argv", "command", "unknown"),
    [
        (["serve", "--threads", "1"], "argus serve", "--threads 1"),
        (["loadgen", "--jsonl", "out.jsonl"], "argus loadgen", "--jsonl out.jsonl"),
        (["bench", "cache", "--bogus"], "argus bench cache", "--bogus"),
        (["profile", "latency", "--out", "p.json", "--bogus"], "argus profile latency", "--bogus"),
    ],
)
def test_a_flag_a_command_does_not_take_is_refused_by_that_command(argv, command, unknown, capsys):
    """argparse hands a sub-command's leftovers up to `argus`, which printed its own usage (the list of commands) and
    `argus: error: unrecognized arguments: --threads 1`: neither the command nor the flags it takes, where every other
    usage error names the whole command (docs/commands.md)."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {command} "), err
    assert err.endswith(f"{command}: error: unrecognized arguments: {unknown}\n"), err


def test_an_argus_flag_given_after_the_command_is_said_to_go_before_it(capsys):
    """docs/commands.md says `--log-level` goes before the command; after it, it was only `unrecognized`."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--log-level", "DEBUG"])
    assert capsys.readouterr().err.endswith(
        "argus serve: error: unrecognized arguments: --log-level DEBUG; --log-level is argus's own flag: give it"
        " before the command, as `argus --log-level ... serve`\n"
    )
