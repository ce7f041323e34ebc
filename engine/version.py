"""The version of argus that runs: what `argus --version`, the engine's first line, /health and /metrics say, so that
whoever reads a log or scrapes a fleet of engines knows which code answered."""

from functools import cache
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "argus-serve"  # pyproject.toml's [project] name


@cache
def argus_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a checkout never installed (its folder on PYTHONPATH)
        return "unknown"
