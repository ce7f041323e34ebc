"""The similarity table file: what `argus calibrate --json` writes and `argus serve --similarity-table` reads.

A table is of one embedder's cosine scale, so the file names the embedder it was calibrated with: by name, and by
`Embedder.identity` (`hash`, or a neural embedder's name and a digest of its model folder: two MiniLM or CLIP
folders may differ in scale as much as two embedders do). The engine serves with it only under that embedder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from controller.quality_samples import model_identity
from controller.similarity import SimilarityTable
from controller.versioned import checked_versioned, fields_of
from engine.cache.embedders import embedder_identity
from engine.commands.arg_types import UsageError, read_user_file
from workers.limits import DEFAULT_LEVELS

TABLE_KIND = "similarity_table"
# the report argus calibrate wrote before its file said what it is: read as one, its embedder named, not identified
_UNMARKED_METHODS = ("quantile-match", "nirvana-table-unchanged")


@dataclass(frozen=True)
class TableFile:
    path: str
    embedder: str
    identity: str | None  # the embedder's model (Embedder.identity); None in a file from before it was recorded
    table: SimilarityTable


def read_table_file(path: str) -> TableFile:
    """The table in `path`. Content no engine could serve with is a ValueError naming the file: another kind of file,
    levels that are no cache levels, thresholds that are no cosine similarity or fall as the level rises. Reading's
    own errors (OSError, json's) come as they are, for engine.commands.arg_types.read_user_file to name the file."""
    with open(path) as f:
        data = json.load(f)
    if not (isinstance(data, dict) and "kind" not in data and data.get("method") in _UNMARKED_METHODS):
        checked_versioned(data, path, TABLE_KIND)
    with fields_of(path):
        embedder = data["embedder"]
        if not isinstance(embedder, str):
            raise ValueError(f"embedder {embedder!r} is not an embedder's name")
        # as a profile's, a predictor's and the samples' are: a line break in one forged a line in the refusal of a
        # table of another model, and one of any length was taken
        identity = model_identity(data.get("embedder_identity"), "embedder_identity")
        return TableFile(path, embedder, identity, _table(data["thresholds"]))


def given_table_file(path: str) -> TableFile:
    """--similarity-table `path` read, or a UsageError naming it."""
    if not path:  # a variable left unset ("$TABLE"): the bundled table would have served without a word
        raise UsageError("--similarity-table is empty: give the file `argus calibrate --json` wrote")
    return read_user_file(read_table_file, path)


def checked_table_file(
    path: str, embedder: str, model_path: str | None, model_flag: str, levels: Iterable[int] | None = None
) -> TableFile:
    """--similarity-table `path`, for `embedder` with the model in `model_path` (given as `model_flag`) caching at
    `levels` (None: the table's own): a table that cannot serve so is a UsageError, one line naming the file."""
    given = given_table_file(path)
    try:
        identity = embedder_identity(embedder, model_path)
    except OSError as error:  # a file in the folder this user cannot read: the load would fail on it too
        raise UsageError(f"{model_flag} {model_path}: {error}") from None
    if problem := table_problem(
        given, embedder, identity, given.table.levels[1:] if levels is None else levels, model_flag
    ):
        raise UsageError(problem)
    return given


def table_problem(
    given: TableFile, embedder: str, identity: str, levels: Iterable[int], model_flag: str = "--embedder-path"
) -> str | None:
    """Why an engine embedding with `embedder` (whose model is `identity`, in the folder `model_flag` names) and
    caching at `levels` cannot serve with the table; None if it can. Levels of the table the engine does not cache at
    are left out, as of the bundled tables (SimilarityTable.restricted)."""
    if problem := embedder_problem(given, embedder):
        return problem
    if given.identity is not None and given.identity != identity:
        return (
            f"{given.path}: a table of the {embedder} model {given.identity}, not of this command's {identity} (give"
            f" {model_flag} the folder it was calibrated with, or calibrate with --model-path this one)"
        )
    if missing := sorted(set(levels) - set(given.table.levels)):
        return (
            f"{given.path}: no threshold for levels {missing}, which the engine caches at (--levels"
            f" {','.join(map(str, levels))}): give --levels among {list(given.table.levels[1:])}, or a table of them"
        )
    return None


def _table(thresholds: object) -> SimilarityTable:
    if not isinstance(thresholds, dict) or not thresholds:
        raise ValueError(f'thresholds {thresholds!r}: expected a similarity for each level, as {{"5": 0.65, ...}}')
    by_level: dict[int, float] = {}
    for key, threshold in thresholds.items():
        try:
            level = int(key)
        except ValueError:
            raise ValueError(f"level {key!r} is not a whole number") from None
        if level not in DEFAULT_LEVELS:
            raise ValueError(f"level {level} is none of the cache levels {list(DEFAULT_LEVELS)} (of N = 50 steps)")
        if level in by_level:
            raise ValueError(f"level {level} twice")
        # bool is an int to Python, and json reads NaN and Infinity, which no comparison passes
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not -1 <= threshold <= 1:
            raise ValueError(f"level {level}: threshold {threshold!r} is not a cosine similarity, from -1 to 1")
        by_level[level] = float(threshold)
    rising = [by_level[level] for level in sorted(by_level)]
    # equal thresholds are what calibrating on few prompts may give: the higher level takes every such neighbour
    if rising != sorted(rising):
        raise ValueError(
            f"thresholds {dict(sorted(by_level.items()))} fall as the level rises: a higher level reuses more of the"
            " neighbour's steps, so it needs a nearer neighbour"
        )
    return SimilarityTable.from_pairs((threshold, level) for level, threshold in by_level.items())


def embedder_problem(given: TableFile, embedder: str) -> str | None:
    """Why the table cannot be read on the similarities of `embedder` (each embedder has its own scale); None if it
    can."""
    if given.embedder == embedder:
        return None
    return (
        f"{given.path}: a table of the {given.embedder} embedder's similarities, not the {embedder} embedder's"
        f" (give --embedder {given.embedder}, or calibrate with --embedder {embedder})"
    )
