"""`argus train-predictor`: fit the Optimal-K predictor on profiled samples and save it as JSON.

Input: JSONL, one profiled image a line: {"similarity": s, "level": K,
"quality": q, "prompt": "..."} (optionally "neighbour_prompt", which adds the
word-overlap feature; "embedder", whose similarities they are, which the
predictor keeps, or --embedder's when the samples name none: `argus serve`
refuses it with another embedder). Every fifth
sample of each level is held out to report accuracy (whether the image stays
above the target at its level), then the model is refit on all samples and
written to --out. The held-out samples also score a similarity table beside it, with --embedder (its bundled
table) or --similarity-table (one `argus calibrate --json` wrote, as `argus serve` takes).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from controller.predictor import Lookup, TrainedPredictor, features_of
from controller.quality_samples import (
    MadeWith,
    QualitySample,
    embedder_mismatch,
    made_with,
    read_quality_samples,
    steps_mismatch,
)
from controller.similarity import SimilarityTable
from engine.cache.embedders import EMBEDDERS
from engine.cache.table_file import embedder_problem, given_table_file
from engine.commands.arg_types import (
    UsageError,
    none_empty,
    not_an_input,
    output_file,
    positive_float,
    probability,
    read_user_file,
)
from engine.logs.plurals import counted
from engine.system.whole_files import written_or_exit
from workers.limits import DEFAULT_STEPS

# every this many'th sample of each level is held out to score the trial fit
_HELD_OUT_EVERY = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("samples", help="JSONL of profiled samples (similarity, level, quality, prompt)")
    parser.add_argument("--out", required=True, type=output_file, help="where to write the predictor (JSON)")
    # checked here, by the names typed: TrainedPredictor refuses them too, but by its own names (min_probability)
    parser.add_argument(
        "--target", type=positive_float, default=95.0, help="quality to stay above, percent (default 95)"
    )
    parser.add_argument(
        "--min-probability",
        type=probability,
        default=0.5,
        help="serve at a level when P(quality >= target) is at least this, 0 to 1 (default 0.5)",
    )
    parser.add_argument("--l2", type=positive_float, default=1.0, help="ridge penalty of the logistic fits (default 1)")
    parser.add_argument(
        "--embedder",
        choices=EMBEDDERS,
        help="also score this embedder's bundled similarity table on the same samples",
    )
    parser.add_argument(
        "--similarity-table",
        metavar="FILE",
        help="also score this table (`argus calibrate --json` output, as `argus serve --similarity-table` takes) on the"
        " same samples, rather than --embedder's bundled one",
    )


def run(args: argparse.Namespace) -> int:
    from loadgen.bench.output import table

    none_empty(args, "samples", "--similarity-table")  # "" read as ".": '.: Is a directory'
    not_an_input(args.out, args.samples, args.similarity_table)
    profiled = read_user_file(read_quality_samples, args.samples)
    made = _made_with(args, profiled)
    _check_levels(args, profiled)
    # samples that name no embedder are --embedder's as the operator says: kept on the predictor all the same, as
    # unsaid `argus serve` took it under any embedder (embedder_mismatch passes a predictor that names none)
    embedder = made.embedder or args.embedder
    reference, reference_name = _reference_table(args, made)
    samples = [s for s in profiled if s.similarity is not None and s.level > 0]
    if len(samples) < 10:
        raise UsageError(f"{args.samples}: need at least 10 samples served from a neighbour, have {len(samples)}")
    training, held_out = _split(samples)
    # the trial's features are the predictor's: chosen on its training share alone, one held-out sample that named no
    # neighbour's prompt failed the command in a traceback, where the rest gave the trial word overlap and not the
    # predictor written, whose accuracy the report claimed for another model's
    features = features_of(samples)
    try:
        trial = TrainedPredictor.fit(training, args.target, args.min_probability, args.l2, features=features)
    except ValueError as error:  # samples it cannot fit, said in one line
        raise UsageError(str(error)) from None

    rows = []
    for level in sorted({s.level for s in held_out}):
        at_level = [s for s in held_out if s.level == level]
        share_good = sum(s.quality >= args.target for s in at_level) / len(at_level)
        row = [level, len(at_level), share_good, _accuracy(lambda s: _trained_says_ok(trial, s), at_level, args.target)]
        if reference is not None:
            row.append(_accuracy(lambda s: s.level <= reference.level_for(s.similarity), at_level, args.target))
        rows.append(row)

    model = TrainedPredictor.fit(
        samples,
        args.target,
        args.min_probability,
        args.l2,
        provenance=f"fit on {counted(len(samples), 'sample')} from {Path(args.samples).name}, target {args.target}%",
        embedder=embedder,
        embedder_identity=made.embedder_identity,
        model=made.model,
        features=features,
    )
    headers = ["level", "held-out", f"share >= {args.target:g}", "trained accuracy"]
    if reference is not None:
        headers.append(f"table ({reference_name}) accuracy")
    print(f"held-out samples: every {_HELD_OUT_EVERY}th of each level, {len(held_out)} of {len(samples)}")
    print(f"features: {', '.join(model.features)}")
    print(f"similarities: {_whose_similarities(embedder, made)}")
    if rows:
        print(table(headers, rows))
    if unscored := sorted({s.level for s in samples} - {s.level for s in held_out}):
        # an empty table was printed, headers alone, and no word of why: a level of under 5 samples holds none out
        which = "any level" if not rows else f"levels {', '.join(map(str, unscored))}"
        print(
            f"accuracy not scored at {which}: too few samples (fewer than {_HELD_OUT_EVERY} at each), and every"
            f" {_HELD_OUT_EVERY}th of a level is held out to score it (profile more prompts: argus profile quality)"
        )
    written_or_exit("argus train-predictor", "predictor", args.out, lambda: model.save(args.out))
    print(f"predictor written to {args.out}")
    return 0


def _made_with(args: argparse.Namespace, samples: list[QualitySample]) -> MadeWith:
    """What the samples were made with, which the predictor is kept with (`argus serve` refuses it with another
    embedder or embedder model). Refused, naming the file: samples that say several things of one; samples made with
    another N than the engine's levels are steps of (DEFAULT_STEPS), which would teach the predictor what another
    share of the steps reused does; samples of another embedder than --embedder, whose table would be scored on
    similarities that are not its own."""
    try:
        made = made_with(samples)
    except ValueError as error:
        raise UsageError(f"{args.samples}: {error}") from None
    if problem := steps_mismatch(made.steps, DEFAULT_STEPS):
        raise UsageError(f"{args.samples}: {problem}")
    if args.embedder and (problem := embedder_mismatch(made.embedder, args.embedder)):
        raise UsageError(f"{args.samples}: {problem}")
    return made


def _check_levels(args: argparse.Namespace, samples: list[QualitySample]) -> None:
    """Samples at a level of N (DEFAULT_STEPS, theirs: _made_with) or more are refused, naming the file: a level is
    the number of a neighbour's N steps an image resumes from, so below N, as `argus serve --levels` and `argus
    profile` take it. Taken, levels 50 and 60 were fit and written as levels the predictor could choose."""
    if beyond := sorted({sample.level for sample in samples if sample.level >= DEFAULT_STEPS}):
        raise UsageError(
            f"{args.samples}: samples at levels {beyond}, not below N={DEFAULT_STEPS} steps: a level is how many of"
            " its neighbour's N steps an image reuses"
        )


def _whose_similarities(embedder: str | None, made: MadeWith) -> str:
    if embedder is None:
        return "of an embedder the samples do not name (give --embedder to have the predictor keep it)"
    return f"the {embedder} embedder" + ("" if made.embedder else " (as --embedder says: the samples do not name one)")


def _reference_table(args: argparse.Namespace, made: MadeWith) -> tuple[SimilarityTable | None, str]:
    """The table to score beside the predictor, and what the report calls it: --similarity-table's, else
    --embedder's bundled one, else none. A table of another embedder than the samples', or of another model of it
    (two CLIP folders), would be read on another scale of similarity: `argus serve` refuses it so."""
    embedder = made.embedder
    if args.similarity_table is None:
        return (SimilarityTable.bundled(args.embedder), args.embedder) if args.embedder else (None, "")
    given = given_table_file(args.similarity_table)
    if args.embedder and (problem := embedder_problem(given, args.embedder)):
        raise UsageError(problem)
    if embedder is not None and embedder != given.embedder:
        raise UsageError(
            f"{given.path}: a table of the {given.embedder} embedder's similarities, and {args.samples} holds the"
            f" {embedder} embedder's: give a table `argus calibrate --embedder {embedder}` wrote"
        )
    if None not in (given.identity, made.embedder_identity) and given.identity != made.embedder_identity:
        raise UsageError(
            f"{given.path}: a table of the embedder model {given.identity}, and {args.samples} holds the similarities"
            f" of {made.embedder_identity}: give a table `argus calibrate` wrote with the model the samples were"
            " profiled with"
        )
    return given.table, Path(given.path).name


def _split(samples: list[QualitySample]) -> tuple[list[QualitySample], list[QualitySample]]:
    """(training, held out): every fifth sample of each level held out. Not every fifth of the file: `argus profile
    quality` writes each prompt's levels in turn, so with five levels every fifth sample was at the top level, which
    the trial fit then never saw (a KeyError on it), and no other level was scored."""
    training, held_out = [], []
    seen: Counter[int] = Counter()
    for s in samples:
        seen[s.level] += 1
        (held_out if seen[s.level] % _HELD_OUT_EVERY == 0 else training).append(s)
    return training, held_out


def _accuracy(says_ok: Callable[[QualitySample], bool], samples: list[QualitySample], target: float) -> float:
    """Share of samples where "this level keeps quality >= target" was called right."""
    return sum(says_ok(s) == (s.quality >= target) for s in samples) / len(samples)


def _trained_says_ok(model: TrainedPredictor, s: QualitySample) -> bool:
    lookup = Lookup(s.similarity, (), s.prompt, s.neighbour_prompt)
    return model.probability(s.level, lookup) >= model.min_probability
