"""Prompt sets, read by file extension, and the pairing of prompts with a schedule.

- `.txt`: one prompt a line (as diffusiondb_5k.txt); blank lines are skipped.
- `.tsv`: a header with a `Prompt` column (as PartiPrompts). The file is not
  CSV-quoted: a prompt may begin with a double quote, which is part of it.
- `.json`: a list of strings (as DrawBench).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path

from loadgen.arrivals import Arrival
from loadgen.wording import counted
from protocols.limits import MAX_PROMPT_CHARS, PROMPT_PATTERN

PROMPT_COLUMN = "Prompt"
# an editor's or a spreadsheet's export may begin with a byte-order mark, which is no part of the first prompt (nor
# of the TSV's Prompt header, nor JSON)
_ENCODING = "utf-8-sig"


def load_prompts(path: str | Path) -> list[str]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        prompts = _lines(path)
    elif suffix == ".tsv":
        prompts = _tsv(path)
    elif suffix == ".json":
        prompts = _json(path)
    else:
        raise ValueError(f"{path}: prompts come as .txt (one a line), .tsv (a Prompt column) or .json (a list)")
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    too_long = [i for i, p in enumerate(prompts) if len(p) > MAX_PROMPT_CHARS]
    if too_long:
        # the engine would answer each with a 400; better to say so before the run than to count errors
        more = f" (and {len(too_long) - 1:,} more)" if len(too_long) > 1 else ""
        raise ValueError(f"{path}: prompt {too_long[0]}{more} over {MAX_PROMPT_CHARS} chars")
    return prompts


def _lines(path: Path) -> list[str]:
    with open(path, encoding=_ENCODING) as f:
        return [line.rstrip("\r\n") for line in f if _served(line)]


def _tsv(path: Path) -> list[str]:
    with open(path, encoding=_ENCODING, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames is None or PROMPT_COLUMN not in reader.fieldnames:
            raise ValueError(f"{path}: no {PROMPT_COLUMN!r} column in the header")
        try:
            return [row[PROMPT_COLUMN] for row in reader if _served(row[PROMPT_COLUMN] or "")]
        except csv.Error as exc:  # a line over the csv module's field limit
            raise ValueError(f"{path}:{reader.line_num}: {exc}") from None


def _json(path: Path) -> list[str]:
    with open(path, encoding=_ENCODING) as f:
        data = json.load(f)
    if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
        raise ValueError(f"{path}: expected a JSON list of strings")
    for i, prompt in enumerate(data):
        # JSON may escape half of a UTF-16 pair alone (an emoji cut in two by a JavaScript slice): such a prompt
        # is no text any engine takes (a 400 over HTTP, a failure to encode over ZeroMQ), for every request sent it
        try:
            prompt.encode()
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{path}: string {i} holds {prompt[exc.start : exc.end]!r}, half of a UTF-16 pair, which is not text"
            ) from None
    return [p for p in data if _served(p)]


def _served(prompt: str) -> bool:
    """Not blank: a character other than whitespace and control characters, which the engine refuses alone (a 400
    for every request sent it, where a line of NULs was kept)."""
    return re.search(PROMPT_PATTERN, prompt) is not None


def pair_prompts(schedule: Sequence[Arrival], prompts: Sequence[str]) -> list[int]:
    """The prompt index for each arrival: the one the trace names, else the next in order, cycling."""
    if not prompts:
        raise ValueError("no prompts")
    chosen = []
    for i, arrival in enumerate(schedule):
        if arrival.prompt_index is None:
            chosen.append(i % len(prompts))
        elif arrival.prompt_index < len(prompts):
            chosen.append(arrival.prompt_index)
        else:
            there = f"there {'is' if len(prompts) == 1 else 'are'} {counted(len(prompts), 'prompt')}"
            raise ValueError(f"arrival {i} names prompt {arrival.prompt_index}, but {there}")
    return chosen
