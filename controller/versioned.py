"""Versioned JSON files: every file the controller reads or writes says what it is and where it came from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.system.whole_files import written_whole

VERSION = 1
DATA_DIR = Path(__file__).resolve().parent / "data"


def read_versioned(path: str | Path, kind: str) -> dict[str, Any]:
    with open(path) as f:
        return checked_versioned(json.load(f), path, kind)


def checked_versioned(data: object, path: str | Path, kind: str) -> dict[str, Any]:
    """`data`, read from `path`, if it is a versioned file of `kind`; else a ValueError naming the file."""
    if not isinstance(data, dict) or data.get("version") != VERSION or data.get("kind") != kind:
        raise ValueError(f"{path}: not a version {VERSION} {kind!r} file")
    return data


@contextmanager
def fields_of(path: str | Path) -> Iterator[None]:
    """Reading a versioned file's fields: one missing, or of the wrong type or value, is a ValueError naming the
    file (what the engine reports as a bad file), not a KeyError or TypeError traceback."""
    try:
        yield
    except KeyError as error:
        raise ValueError(f"{path}: no field {error}") from None
    except (TypeError, AttributeError, ValueError, OverflowError) as error:  # OverflowError: float() of 10**400
        raise ValueError(f"{path}: {error}") from None


def write_versioned(path: str | Path, kind: str, provenance: str, payload: dict[str, Any]) -> None:
    data = {"version": VERSION, "kind": kind, "provenance": provenance, **payload}
    with written_whole(path) as f:
        json.dump(data, f, indent=2)
        f.write("\n")
