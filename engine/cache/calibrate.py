"""`argus calibrate`: derives an embedder's similarity -> level table from a prompt set.

The prompts are replayed in order, as a serving cache sees them: each prompt is
compared with its most similar EARLIER prompt (exact search, unbounded cache;
the first prompt has none and is a miss). A prompt "reaches" level K when that
similarity exceeds the table's threshold for K.

Method (see docs/cache.md): quantile matching. Thresholds for embedder E are
chosen so that, on this prompt set, the fraction of prompts reaching each level
equals the fraction the reference embedder R reaches under its own table. It
assumes E and R order prompt pairs alike; the report's `agreement` (how often E
and R pick the same level for a prompt) shows how far that holds. With
`--reference nirvana` no matching is done: NIRVANA's CLIP table is applied to E's
own similarities as they are, the assumption the shipped minilm table rests on.

`--json OUT` writes the report as a similarity table file (engine/cache/table_file.py), naming the embedder model
the similarities are of: `argus serve --similarity-table OUT` serves with its table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

import numpy as np

from controller.versioned import write_versioned
from engine.cache.embedder_flags import check_embedder_model
from engine.cache.embedders import EMBEDDERS, make_embedder
from engine.cache.table_file import TABLE_KIND
from engine.cache.thresholds import NIRVANA_CLIP, LevelTable, allowed_level, table_for
from engine.commands.arg_types import UsageError, none_empty, not_an_input, output_file, positive_int, read_user_file
from engine.logs.plurals import counted
from engine.system.whole_files import written_or_exit
from loadgen.prompts import load_prompts

NIRVANA = "nirvana"
# candidate thresholds: 0.001 apart, like the precision tables are published with;
# a coarse grid also keeps float noise around similarity 1.0 (exact repeats) harmless
_GRID = np.round(np.arange(0, 1000) / 1000.0, 3)
_BLOCK = 1024  # rows of the similarity matrix computed at once


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embedder", required=True, choices=EMBEDDERS, help="the embedder to calibrate")
    parser.add_argument(
        "--prompts",
        required=True,
        metavar="FILE",
        help="prompts in serving order, read as `argus loadgen` reads them: .txt (one a line), .tsv (a Prompt column)"
        " or .json (a list); blank prompts are skipped",
    )
    parser.add_argument(
        "--reference",
        choices=(*EMBEDDERS, NIRVANA),
        help="match the per-level hit fractions of this embedder under its shipped table (default minilm;"
        " for --embedder minilm, nirvana: NIRVANA's CLIP table applied unchanged)",
    )
    parser.add_argument(
        "--model-path",
        metavar="DIR",
        help="--embedder's model: clip: a local CLIP text encoder directory (needed);"
        " minilm: its model directory (default: the package's)",
    )
    parser.add_argument("--reference-model-path", metavar="DIR", help="--reference's model, as --model-path")
    parser.add_argument("--limit", type=positive_int, help="use only the first N prompts")
    parser.add_argument(
        "--json",
        metavar="OUT",
        type=output_file,
        help="write the table and the hit fractions here: `argus serve --similarity-table OUT` serves with the table",
    )


def run(args: argparse.Namespace) -> int:
    # a variable left unset: "" was read as the folder it names, ".", and said to be no prompt set
    none_empty(args, "--prompts", "--model-path", "--reference-model-path")
    not_an_input(args.json, args.prompts, flag="--json")
    usual = NIRVANA if args.embedder == "minilm" else "minilm"
    reference = args.reference or usual
    if reference == args.embedder:
        # the embedder's usual reference: NIRVANA's table, applied as it is, calibrates a hash embedder to nothing
        raise UsageError(f"--reference must differ from --embedder ({reference}); try --reference {usual}")
    check_embedder_model(args.embedder, args.model_path, "--embedder", "--model-path")
    check_embedder_model(reference, args.reference_model_path, "--reference", "--reference-model-path")
    prompts = read_user_file(load_prompts, args.prompts)[: args.limit]
    if len(prompts) < 2:
        raise UsageError(f"{args.prompts}: need at least 2 prompts, got {len(prompts)}")
    embedder = make_embedder(args.embedder, args.model_path)
    similarities = replay_similarities(embedder.embed(prompts))
    if reference == NIRVANA:
        reference_table, reference_similarities = NIRVANA_CLIP, similarities
        table = dict(NIRVANA_CLIP)
    else:
        reference_table = table_for(reference)
        reference_vectors = make_embedder(reference, args.reference_model_path).embed(prompts)
        reference_similarities = replay_similarities(reference_vectors)
        table = match_quantiles(similarities, reaching(reference_similarities, reference_table))
    report = {
        "embedder": args.embedder,
        # the model whose similarities the table is of: `argus serve --similarity-table` serves with it under it alone
        "embedder_identity": embedder.identity,
        "reference": reference,
        "method": "nirvana-table-unchanged" if reference == NIRVANA else "quantile-match",
        "prompts": str(args.prompts),
        "count": len(prompts),
        "thresholds": _by_level(table),
        "reference_thresholds": _by_level(reference_table),
        "reaching": _by_level(reaching(similarities, table)),
        "reference_reaching": _by_level(reaching(reference_similarities, reference_table)),
        "served": _by_level(served(similarities, table)),
        "mean_level": mean_level(similarities, table),
        "agreement": agreement(similarities, table, reference_similarities, reference_table),
    }
    _print_report(report)
    if args.json:
        provenance = f"argus calibrate --embedder {args.embedder} --reference {reference} --prompts {args.prompts}"
        written_or_exit(
            "argus calibrate", "table", args.json, lambda: write_versioned(args.json, TABLE_KIND, provenance, report)
        )
    return 0


# -- replay and tables ---------------------------------------------------------------
def replay_similarities(vectors: np.ndarray) -> np.ndarray:
    """For each row, the cosine similarity to its most similar earlier row (-inf for the first)."""
    n = len(vectors)
    best = np.full(n, -np.inf)
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        block = vectors[start:stop] @ vectors[:stop].T
        earlier = np.arange(stop)[None, :] < np.arange(start, stop)[:, None]
        best[start:stop] = np.where(earlier, block, -np.inf).max(axis=1)
    # rounding error of unit vectors must not lift an exact repeat past 1
    return np.minimum(best, 1.0)


def reaching(similarities: np.ndarray, table: LevelTable) -> dict[int, float]:
    """Per level, the fraction of prompts whose similarity exceeds that level's threshold."""
    return {level: float(np.mean(similarities > threshold)) for level, threshold in table.items()}


def match_quantiles(similarities: np.ndarray, targets: Mapping[int, float]) -> dict[int, float]:
    """Per level, the grid threshold whose reaching fraction is nearest the target.

    Every threshold in a run of equally good ones reaches the same prompts; the
    middle of the run leaves the widest margin to the similarities either side.
    """
    ordered = np.sort(similarities)
    fractions = 1.0 - np.searchsorted(ordered, _GRID, side="right") / len(ordered)
    table = {}
    for level, target in targets.items():
        error = np.abs(fractions - target)
        best = np.flatnonzero(error == error.min())
        table[level] = float(_GRID[best[len(best) // 2]])
    return table


def served(similarities: np.ndarray, table: LevelTable) -> dict[int, float]:
    """The fraction of prompts served at each level (0: a miss), with every level stored."""
    levels = [allowed_level(s, table) for s in similarities]
    return {level: levels.count(level) / len(levels) for level in (0, *sorted(table))}


def mean_level(similarities: np.ndarray, table: LevelTable) -> float:
    return float(np.mean([allowed_level(s, table) for s in similarities]))


def agreement(similarities: np.ndarray, table: LevelTable, other: np.ndarray, other_table: LevelTable) -> float:
    """The fraction of prompts that both embedders serve at the same level."""
    same = [allowed_level(a, table) == allowed_level(b, other_table) for a, b in zip(similarities, other, strict=True)]
    return float(np.mean(same))


def _by_level(values: Mapping[int, float]) -> dict[str, float]:
    return {str(level): round(value, 4) for level, value in sorted(values.items())}


def _print_report(report: dict) -> None:
    print(
        f"{report['embedder']} calibrated against {report['reference']} ({report['method']}) "
        f"on {counted(report['count'], 'prompt')} of {report['prompts']}"
    )
    header = ("level", "threshold", "reaching", "ref. threshold", "ref. reaching", "served")
    print("  ".join(f"{h:>{w}}" for h, w in zip(header, (5, 9, 8, 14, 13, 6), strict=True)))
    print(f"{0:>5}  {'':>9}  {'':>8}  {'':>14}  {'':>13}  {report['served']['0']:>6.3f}")
    for level in report["thresholds"]:
        print(
            f"{level:>5}  {report['thresholds'][level]:>9.3f}  {report['reaching'][level]:>8.3f}  "
            f"{report['reference_thresholds'][level]:>14.3f}  {report['reference_reaching'][level]:>13.3f}  "
            f"{report['served'][level]:>6.3f}"
        )
    print(
        f"mean level {report['mean_level']:.2f}; same level as the reference for {report['agreement']:.1%} of prompts"
    )


if __name__ == "__main__":  # the same as `argus calibrate ...`
    from engine.cli import main

    sys.exit(main(["calibrate", *sys.argv[1:]]))
