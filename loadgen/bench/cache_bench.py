"""`argus bench cache`: the prompt cache at scale, and the hit rates a prompt set gets from it.

Index: `--entries` prompts are inserted one at a time through PromptCache.insert
(each with one small latent), the way the engine inserts; the last
`--timed-inserts` are timed. Then `--lookups` lookups are timed, half of them
near-duplicates of a stored prompt (like a hit), half unrelated (like a miss),
and checked against an exact search (recall@1). Vectors (`--vectors`):
- random: random unit vectors of the hash embedder's width, HNSW's
  hard case (no neighbour stands out); near-duplicates are stored vectors
  turned to cosine 0.9;
- prompts (default): synthetic prompts, each a real prompt's subject with 2 to 6 phrases
  drawn from the phrases of ../shared/data/prompts (DiffusionDB, PartiPrompts),
  hash-embedded; a near-duplicate swaps one phrase of a stored prompt, as users do.
Wall-clock percentiles include whatever else the machine runs; the CPU-time
percentiles of the cache's thread do not.

Store: `--latents` SD-XL-sized latents (4 x 128 x 128 float16, 128 KiB) are put
into a LatentStore; bytes held per latent are the growth of the process's
resident memory (what the machine pays) divided by the count, beside what
tracemalloc sees Python and numpy allocate.

`--replay FILE` measures something else instead: the hit rate per level when the
prompts are replayed in order through a PromptCache (replay_hit_rates), embedded
by `--embedder` (default hash) and served by `--similarity-table` (default: the
embedder's bundled table); those and `--model-path` go with `--replay` only.
The file is read as `argus loadgen` reads its prompts (loadgen/prompts.py).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cache.embedders import EMBEDDERS
from engine.commands.arg_types import (
    UsageError,
    at_least,
    host_memory_bytes,
    non_negative_int,
    none_empty,
    positive_int,
    read_user_file,
)
from loadgen.bench.output import table, write_json
from loadgen.shared_data import PROMPTS_DIR
from loadgen.stats import percentile

if TYPE_CHECKING:  # `argus` imports this module at every start: nothing heavy at run time
    from engine.cache.embedders import Embedder
    from engine.cache.thresholds import LevelTable

SDXL_LATENT = (4, 128, 128)  # 1024 x 1024 px, float16
HASH_WIDTH = 1024
PLANTED_SIMILARITY = 0.9
PROMPT_FILES = ("diffusiondb_5k.txt", "partiprompts.tsv")


# The index benchmark's flags, with their defaults: None when not given, so that --replay can refuse them
INDEX_DEFAULTS = {
    "entries": 100_000,
    "dim": HASH_WIDTH,
    "vectors": "prompts",
    "lookups": 2000,
    "timed_inserts": 2000,
    "latents": 5000,
    "seed": 0,
    "data": str(PROMPTS_DIR),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--entries", type=positive_int, help=f"prompts in the index (default {INDEX_DEFAULTS['entries']})"
    )
    parser.add_argument(
        "--dim",
        # in one dimension no vector is at cosine PLANTED_SIMILARITY to another: the near-duplicates came out NaN,
        # found no neighbour, and the run ended in an AttributeError traceback
        type=at_least(int, 2, "", f"a near-duplicate is a stored vector turned to cosine {PLANTED_SIMILARITY:g}"),
        help=f"random vectors' width, at least 2 (default {HASH_WIDTH}, as hash)",
    )
    parser.add_argument(
        "--vectors",
        choices=("prompts", "random"),
        help="what is indexed: hash embeddings of prompts (the engine's case, the default), or random unit vectors"
        " (HNSW's worst)",
    )
    parser.add_argument("--lookups", type=positive_int, help=f"timed lookups (default {INDEX_DEFAULTS['lookups']})")
    parser.add_argument(
        "--timed-inserts",
        type=positive_int,
        help=f"inserts timed at the end of the fill (default {INDEX_DEFAULTS['timed_inserts']})",
    )
    parser.add_argument(
        "--latents",
        type=positive_int,
        help=f"SD-XL latents for the bytes measurement (default {INDEX_DEFAULTS['latents']})",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, help=f"seeds the prompts or vectors indexed (default {INDEX_DEFAULTS['seed']})"
    )
    parser.add_argument("--data", help=f"folder of the shared prompt files (default {PROMPTS_DIR})")
    parser.add_argument(
        "--replay",
        metavar="PROMPTS",
        help="instead: hit rates replaying this prompt file in order (read as `argus loadgen` reads --prompts)",
    )
    # None when not given: given without --replay, they are refused, not ignored
    parser.add_argument("--embedder", choices=EMBEDDERS, help="with --replay: the prompt embedder (default hash)")
    parser.add_argument(
        "--model-path",
        metavar="DIR",
        help="with --replay: --embedder's model: clip: a local CLIP text encoder directory (needed); minilm: its"
        " model directory (default: the package's)",
    )
    parser.add_argument(
        "--similarity-table",
        metavar="FILE",
        help="with --replay: `argus calibrate --json` output for --embedder, the thresholds to serve by, as `argus"
        " serve --similarity-table` (default: the embedder's bundled table)",
    )


def run(args: argparse.Namespace) -> int:
    none_empty(args, "--data", "--replay", "--model-path", "--similarity-table")  # "" was read as "."
    _refuse_ignored_flags(args)
    if args.replay:
        return _run_replay(args)
    for name, default in INDEX_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if min(args.entries, args.lookups, args.latents) < 2 or not 0 < args.timed_inserts <= args.entries:
        raise UsageError("--entries, --lookups and --latents must be at least 2, --timed-inserts at most --entries")
    _check_memory(args)
    print(f"storing {args.latents} SD-XL latents ...", flush=True)
    stored = _measure_store(args.latents)  # first: later phases' freed memory would blur the RSS growth
    print(f"inserting {args.entries} prompts ({args.vectors} vectors, dim {args.dim}) one at a time ...", flush=True)
    index = _measure_index(args)
    print()
    print(
        table(
            ["lookup", "p50 us", "p99 us", "CPU p50 us", "CPU p99 us", "recall@1"],
            [
                [
                    kind,
                    index[kind]["p50"],
                    index[kind]["p99"],
                    index[kind]["cpu_p50"],
                    index[kind]["cpu_p99"],
                    index[kind]["recall"],
                ]
                for kind in ("near-duplicate", "unrelated", "all")
            ],
        )
    )
    print(f"target: p99 <= 1000 us at 100k prompts; ef={index['ef']}, M={index['m']}")
    print()
    print(
        table(
            ["measure", "value", "note"],
            [
                ["prompts in the index", args.entries, f"{args.vectors} vectors, dim {args.dim}"],
                ["inserts per second", index["insert_per_s"], f"the last {args.timed_inserts}, one at a time"],
                ["raw bytes per SD-XL latent", stored["latent_bytes"], "4 x 128 x 128 float16"],
                [
                    "bytes held per latent (RSS)",
                    stored["rss_bytes"],
                    f"{stored['rss_bytes'] / stored['latent_bytes']:.3f}x raw (target <= 1.1x)",
                ],
                [
                    "bytes allocated per latent (tracemalloc)",
                    stored["traced_bytes"],
                    f"{stored['traced_bytes'] / stored['latent_bytes']:.4f}x raw",
                ],
            ],
        )
    )
    write_json(
        args.json,
        {
            "entries": args.entries,
            "dim": args.dim,
            "lookup_p50_us": index["all"]["p50"],
            "lookup_p99_us": index["all"]["p99"],
            "insert_per_s": index["insert_per_s"],
            "bytes_per_entry": stored["rss_bytes"],
            "latent_bytes_per_entry": stored["latent_bytes"],
            # the rest of what the tables show: the JSON held the lookups of all kinds, timed by the clock alone
            "vectors": args.vectors,
            "traced_bytes_per_entry": stored["traced_bytes"],
            "ef": index["ef"],
            "m": index["m"],
            "lookups": {
                kind: {key: index[kind][key] for key in ("p50", "p99", "cpu_p50", "cpu_p99", "recall")}
                for kind in ("near-duplicate", "unrelated", "all")
            },
        },
    )
    return 0


# -- the index -----------------------------------------------------------------------
def _measure_index(args: argparse.Namespace) -> dict:
    import numpy as np

    from engine.cache.index import EF_SEARCH, M
    from engine.cache.prompt_cache import PromptCache, ShapeKey, prompt_bytes

    rng = np.random.default_rng(args.seed)
    make = _prompt_vectors if args.vectors == "prompts" else _random_vectors
    vectors, queries = make(rng, args)
    shape = ShapeKey(50, 1024, 1024)
    latent = np.zeros(8, dtype=np.float16)  # the index is measured here, not the store
    levels = (5, 10, 15, 20, 25)
    texts = [f"p{i}" for i in range(args.entries)]
    room = sum(prompt_bytes(text, args.dim, len(levels)) + latent.nbytes for text in texts)  # for every entry
    cache = PromptCache("hash", args.dim, levels, max_bytes=room)
    untimed = args.entries - args.timed_inserts
    for i in range(untimed):
        cache.insert(texts[i], vectors[i], shape, {25: latent})
    started = time.perf_counter()
    for i in range(untimed, args.entries):
        cache.insert(texts[i], vectors[i], shape, {25: latent})
    insert_per_s = args.timed_inserts / (time.perf_counter() - started)

    wall, cpu, found = [], [], []
    for query in queries:
        started_ns, cpu_ns = time.perf_counter_ns(), time.thread_time_ns()
        neighbour = cache.lookup(query, shape)
        cpu.append((time.thread_time_ns() - cpu_ns) / 1000.0)
        wall.append((time.perf_counter_ns() - started_ns) / 1000.0)
        found.append(neighbour.prompt_id - 1)  # prompt ids are handed out from 1 in insertion order
    cache.close()
    hits = np.array(found) == _exact_nearest(vectors, queries)
    half = len(queries) // 2
    result: dict = {"insert_per_s": insert_per_s, "ef": EF_SEARCH, "m": M}
    for kind, part in (("near-duplicate", slice(0, half)), ("unrelated", slice(half, None)), ("all", slice(None))):
        result[kind] = {
            "p50": percentile(wall[part], 50),
            "p99": percentile(wall[part], 99),
            "cpu_p50": percentile(cpu[part], 50),
            "cpu_p99": percentile(cpu[part], 99),
            "recall": float(hits[part].mean()),
        }
    return result


def _random_vectors(rng, args: argparse.Namespace):
    """Random unit rows, and queries: the first half stored rows turned to cosine 0.9, the rest unrelated."""
    import numpy as np

    vectors = _unit_rows(rng.standard_normal((args.entries, args.dim), dtype=np.float32))
    planted = vectors[rng.integers(0, args.entries, args.lookups // 2)]
    noise = rng.standard_normal(planted.shape, dtype=np.float32)
    noise = _unit_rows(noise - (noise * planted).sum(axis=1, keepdims=True) * planted)
    near = PLANTED_SIMILARITY * planted + (1 - PLANTED_SIMILARITY**2) ** 0.5 * noise
    unrelated = _unit_rows(rng.standard_normal((args.lookups - len(planted), args.dim), dtype=np.float32))
    return vectors, np.vstack([near, unrelated])


def _prompt_vectors(rng, args: argparse.Namespace):
    """Hash vectors of synthetic prompts, and queries: the first half stored prompts with one phrase swapped."""
    from engine.cache.embedders import make_embedder
    from loadgen.prompts import load_prompts

    real = [p for name in PROMPT_FILES for p in read_user_file(load_prompts, str(Path(args.data) / name))]
    subjects = [p.split(",")[0].strip() for p in real]
    phrases = sorted({part.strip() for p in real for part in p.split(",")[1:] if part.strip()})

    def synthetic(count: int) -> list[list[str]]:
        return [
            [subjects[rng.integers(len(subjects))], *(phrases[j] for j in rng.integers(0, len(phrases), k))]
            for k in rng.integers(2, 7, count)
        ]

    stored = synthetic(args.entries)
    near = []
    for i in rng.integers(0, args.entries, args.lookups // 2):
        parts = list(stored[i])
        parts[rng.integers(1, len(parts))] = phrases[rng.integers(len(phrases))]
        near.append(parts)
    queries = near + synthetic(args.lookups - len(near))
    embedder = make_embedder("hash")
    return embedder.embed([", ".join(p) for p in stored]), embedder.embed([", ".join(p) for p in queries])


def _exact_nearest(vectors, queries):
    import numpy as np

    return np.concatenate([(queries[i : i + 256] @ vectors.T).argmax(axis=1) for i in range(0, len(queries), 256)])


def _unit_rows(rows):
    import numpy as np

    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# -- the store -----------------------------------------------------------------------
def _check_memory(args: argparse.Namespace) -> None:
    """Refuses latents, or index vectors (float32, their least), that are more than this host's memory: each is held
    whole, and past it the run ended killed by the OOM killer (or another process did), a MemoryError traceback
    under a memory limit."""
    memory = host_memory_bytes()
    latent_bytes = 2 * SDXL_LATENT[0] * SDXL_LATENT[1] * SDXL_LATENT[2]  # float16
    for flag, count, each in (("--latents", args.latents, latent_bytes), ("--entries", args.entries, 4 * args.dim)):
        if memory is not None and count * each > memory:
            raise UsageError(
                f"{flag} {count:,} x {each:,} bytes is more than this host's memory ({memory >> 20:,} MiB):"
                " they are held in memory whole"
            )


def _measure_store(count: int) -> dict:
    import tracemalloc

    import numpy as np

    from engine.cache.latent_store import LatentStore

    latent = np.random.default_rng(1).standard_normal(SDXL_LATENT).astype(np.float16)

    def fill() -> LatentStore:
        store = LatentStore(max_bytes=count * latent.nbytes)
        for prompt_id in range(count):
            store.put((prompt_id, 25), latent)  # the store copies: every entry is its own array
        return store

    before = _resident_bytes()
    store = fill()
    rss = (_resident_bytes() - before) / count
    store.close()
    del store
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = fill()
        traced = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    store.close()
    return {"latent_bytes": latent.nbytes, "rss_bytes": rss, "traced_bytes": traced}


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the replay ------------------------------------------------------------------------
def replay_hit_rates(prompts: list[str], embedder: Embedder, table: LevelTable) -> dict:
    """Hit rates per level when `prompts` are served in order through one PromptCache.

    Each prompt looks up its nearest earlier prompt (the index as served), is
    served at the level `table` and the neighbour's stored levels allow (taking
    that latent), then is inserted as a full generation with every level. The
    cache is unbounded, so the rates show what similarity alone allows.
    """
    import numpy as np

    from engine.cache.prompt_cache import PromptCache, ShapeKey, prompt_bytes
    from engine.cache.thresholds import level_for

    levels = tuple(sorted(table))
    shape = ShapeKey(50, 1024, 1024)
    latent = np.zeros(1, dtype=np.float16)  # a stand-in: only which levels exist matters here
    vectors = embedder.embed(prompts)
    room = sum(prompt_bytes(prompt, embedder.dim, len(levels)) + len(levels) * latent.nbytes for prompt in prompts)
    cache = PromptCache(embedder.name, embedder.dim, levels, max_bytes=room)
    served = []
    for prompt, vector in zip(prompts, vectors, strict=True):
        neighbour = cache.lookup(vector, shape)
        level = level_for(neighbour.similarity, table, neighbour.levels) if neighbour else 0
        if level:
            cache.take_latent(neighbour.prompt_id, level)
        else:
            cache.record_miss()
        served.append(level)
        cache.insert(prompt, vector, shape, dict.fromkeys(levels, latent))
    cache.close()
    n = len(prompts)
    return {
        "prompts": n,
        "embedder": embedder.name,
        "thresholds": {str(level): table[level] for level in levels},
        "served": {str(level): served.count(level) / n for level in (0, *levels)},
        "hit_rate": 1 - served.count(0) / n,
        "mean_level": sum(served) / n,
    }


def _run_replay(args: argparse.Namespace) -> int:
    from engine.cache.embedder_flags import check_embedder_model
    from engine.cache.embedders import make_embedder
    from engine.cache.table_file import checked_table_file
    from engine.cache.thresholds import level_table, table_for
    from loadgen.prompts import load_prompts

    name = args.embedder or "hash"
    check_embedder_model(name, args.model_path, "--embedder", "--model-path")
    given = args.similarity_table
    # checked before the prompts are read and the embedder loads: a wrong table is refused at once
    thresholds = (
        table_for(name)
        if given is None
        else level_table(checked_table_file(given, name, args.model_path, "--model-path").table)
    )
    prompts = read_user_file(load_prompts, args.replay)
    embedder = make_embedder(name, args.model_path)
    by = "its bundled similarity table" if given is None else given
    print(f"replaying {len(prompts)} prompts of {args.replay} in order, embedder {embedder.name}, {by} ...", flush=True)
    result = replay_hit_rates(prompts, embedder, thresholds) | {"similarity_table": given}
    rows = [["0 (miss)", "", result["served"]["0"]]]
    rows += [[level, result["thresholds"][level], share] for level, share in result["served"].items() if level != "0"]
    print(table(["level K", "similarity >", "share of prompts"], rows))
    print(
        f"hit rate {result['hit_rate']:.3f}; mean level {result['mean_level']:.2f}"
        f" ({result['mean_level'] / 50:.1%} of 50 steps skipped)"
    )
    write_json(args.json, result)
    return 0


def _refuse_ignored_flags(args: argparse.Namespace) -> None:
    """Flags the mode asked for does not read were ignored, and a benchmark ran for minutes on what the user did not
    ask for."""
    if args.replay:
        given = [_flag(name) for name in INDEX_DEFAULTS if getattr(args, name) is not None]
        why = "not with --replay (they size the index benchmark)"
    else:
        given = [
            flag
            for flag, value in (
                ("--embedder", args.embedder),
                ("--model-path", args.model_path),
                ("--similarity-table", args.similarity_table is not None),
            )
            if value
        ]
        why = "only with --replay (the index benchmark indexes hash vectors of prompts, or random ones: --vectors)"
    if given:
        raise UsageError(f"{' and '.join(given)}: {why}")
    if args.dim is not None and args.vectors != "random":
        raise UsageError("--dim: only with --vectors random (hash vectors of prompts are 1024 wide)")
    if args.data is not None and args.vectors == "random":
        raise UsageError("--data: only with --vectors prompts (random vectors are made from no prompt)")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
