"""`argus bench cache`: the prompt cache at scale, and the hit rates a prompt set gets from it.

Index: `--entries` prompts are inserted one at a time through PromptCache.insert
(each with one small latent), the way the engine inserts; the last
`--timed-inserts` are timed. The vectors are random unit vectors of the hash
embedder's width, not embedded prompts: random vectors are HNSW's hard case (no
neighbour stands out), so these latencies are pessimistic for real prompts. Half
of the timed lookups are planted near-duplicates (cosine 0.9 to a stored prompt,
like a hit), half are unrelated vectors (like a miss); the planted ones also
give the recall of the approximate search.

Store: `--latents` SD-XL-sized latents (4 x 128 x 128 float16, 128 KiB) are put
into a LatentStore; bytes held per latent are the growth of the process's
resident memory (what the machine pays) divided by the count, beside what
tracemalloc sees Python and numpy allocate.

`--replay FILE` measures something else instead: the hit rate per level when the
prompts are replayed in order through a PromptCache (replay_hit_rates).
"""

from __future__ import annotations

import argparse
import os
import time

from loadgen.bench.harness import percentile, table, write_json

SDXL_LATENT = (4, 128, 128)  # 1024 x 1024 px, float16
HASH_WIDTH = 1024
PLANTED_SIMILARITY = 0.9


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--entries", type=int, default=100_000, help="prompts in the index (default 100000)")
    parser.add_argument("--dim", type=int, default=HASH_WIDTH, help="vector width (default 1024, the hash embedder's)")
    parser.add_argument("--lookups", type=int, default=4000, help="timed lookups (default 4000)")
    parser.add_argument("--timed-inserts", type=int, default=2000, help="inserts timed at the end of the fill")
    parser.add_argument("--latents", type=int, default=5000, help="SD-XL latents for the bytes measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replay", metavar="PROMPTS", help="instead: hit rates replaying this prompt file in order")
    parser.add_argument("--embedder", default="hash", help="with --replay: hash, minilm or clip (default hash)")
    parser.add_argument("--model-path", help="with --replay --embedder clip: the local CLIP directory")


def run(args: argparse.Namespace) -> int:
    if args.replay:
        return _run_replay(args)
    if min(args.entries, args.lookups, args.latents) < 1 or not 0 < args.timed_inserts <= args.entries:
        raise SystemExit("--entries, --lookups and --latents must be positive, --timed-inserts within (0, entries]")
    print(f"storing {args.latents} SD-XL latents ...", flush=True)
    stored = _measure_store(args.latents)  # first: later phases' freed memory would blur the RSS growth
    print(f"inserting {args.entries} prompts of dim {args.dim} one at a time ...", flush=True)
    index = _measure_index(args)
    rows = [
        ["lookup, planted near-duplicate", index["planted_p50_us"], index["planted_p99_us"], "us"],
        ["lookup, unrelated vector", index["unrelated_p50_us"], index["unrelated_p99_us"], "us"],
        ["lookup, all", index["p50_us"], index["p99_us"], "us (target p99 <= 1000)"],
    ]
    print()
    print(table(["measure", "p50", "p99", "unit"], rows))
    print()
    print(table(["measure", "value", "note"], [
        ["prompts in the index", args.entries, f"random unit vectors, dim {args.dim}"],
        ["inserts per second", index["insert_per_s"], f"the last {args.timed_inserts}, one at a time"],
        ["recall@1, planted", index["recall"], f"ef={index['ef']}"],
        ["raw bytes per SD-XL latent", stored["latent_bytes"], "4 x 128 x 128 float16"],
        ["bytes held per latent (RSS)", stored["rss_bytes"], f"{stored['rss_bytes'] / stored['latent_bytes']:.3f}x"
                                                            " raw (target <= 1.1x)"],
        ["bytes allocated per latent (tracemalloc)", stored["traced_bytes"],
         f"{stored['traced_bytes'] / stored['latent_bytes']:.4f}x raw"],
    ]))
    write_json(args.json, {
        "entries": args.entries,
        "dim": args.dim,
        "lookup_p50_us": index["p50_us"],
        "lookup_p99_us": index["p99_us"],
        "insert_per_s": index["insert_per_s"],
        "bytes_per_entry": stored["rss_bytes"],
        "latent_bytes_per_entry": stored["latent_bytes"],
    })
    return 0


# -- the index -----------------------------------------------------------------------
def _measure_index(args: argparse.Namespace) -> dict:
    import numpy as np

    from engine.cache.index import EF_SEARCH
    from engine.cache.prompt_cache import PromptCache, ShapeKey

    rng = np.random.default_rng(args.seed)
    shape = ShapeKey(50, 1024, 1024)
    latent = np.zeros(8, dtype=np.float16)  # the index is measured here, not the store
    cache = PromptCache("hash", args.dim, (5, 10, 15, 20, 25), max_bytes=args.entries * latent.nbytes)
    vectors = _unit_rows(rng, args.entries, args.dim)
    untimed = args.entries - args.timed_inserts
    for i in range(untimed):
        cache.insert(f"p{i}", vectors[i], shape, {25: latent})
    started = time.perf_counter()
    for i in range(untimed, args.entries):
        cache.insert(f"p{i}", vectors[i], shape, {25: latent})
    insert_per_s = args.timed_inserts / (time.perf_counter() - started)

    planted = rng.integers(0, args.entries, args.lookups // 2)
    # a stored vector turned by the angle whose cosine is PLANTED_SIMILARITY, in a random direction
    noise = _unit_rows(rng, len(planted), args.dim)
    noise -= (noise * vectors[planted]).sum(axis=1, keepdims=True) * vectors[planted]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    sine = (1 - PLANTED_SIMILARITY**2) ** 0.5
    queries = np.vstack([PLANTED_SIMILARITY * vectors[planted] + sine * noise,
                         _unit_rows(rng, args.lookups - len(planted), args.dim)])
    times_us, found = [], []
    for query in queries:
        started_ns = time.perf_counter_ns()
        neighbour = cache.lookup(query, shape)
        times_us.append((time.perf_counter_ns() - started_ns) / 1000.0)
        found.append(neighbour.prompt_id)
    cache.close()
    n = len(planted)
    # prompt ids are handed out from 1 in insertion order
    recall = float(np.mean(np.array(found[:n]) == planted + 1))
    return {
        "p50_us": percentile(times_us, 50),
        "p99_us": percentile(times_us, 99),
        "planted_p50_us": percentile(times_us[:n], 50),
        "planted_p99_us": percentile(times_us[:n], 99),
        "unrelated_p50_us": percentile(times_us[n:], 50),
        "unrelated_p99_us": percentile(times_us[n:], 99),
        "insert_per_s": insert_per_s,
        "recall": recall,
        "ef": EF_SEARCH,
    }


def _unit_rows(rng, n: int, dim: int):
    import numpy as np

    rows = rng.standard_normal((n, dim), dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# -- the store -----------------------------------------------------------------------
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
def replay_hit_rates(prompts: list[str], embedder, table) -> dict:
    """Hit rates per level when `prompts` are served in order through one PromptCache.

    Each prompt looks up its nearest earlier prompt (hnswlib, as served), is
    served at the level `table` and the neighbour's stored levels allow (taking
    that latent), then is inserted as a full generation with every level. The
    cache is unbounded, so the rates show what similarity alone allows.
    """
    import numpy as np

    from engine.cache.prompt_cache import PromptCache, ShapeKey
    from engine.cache.thresholds import level_for

    levels = tuple(sorted(table))
    shape = ShapeKey(50, 1024, 1024)
    latent = np.zeros(1, dtype=np.float16)  # a stand-in: only which levels exist matters here
    vectors = embedder.embed(prompts)
    cache = PromptCache(embedder.name, embedder.dim, levels, max_bytes=len(prompts) * len(levels) * latent.nbytes)
    served = []
    for prompt, vector in zip(prompts, vectors):
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
    from engine.cache.calibrate import load_prompts
    from engine.cache.embedders import make_embedder
    from engine.cache.thresholds import table_for

    prompts = load_prompts(args.replay)
    embedder = make_embedder(args.embedder, args.model_path)
    print(f"replaying {len(prompts)} prompts of {args.replay} in order, embedder {embedder.name} ...", flush=True)
    result = replay_hit_rates(prompts, embedder, table_for(embedder.name))
    rows = [["0 (miss)", "", result["served"]["0"]]]
    rows += [[level, result["thresholds"][level], share] for level, share in result["served"].items() if level != "0"]
    print(table(["level K", "similarity >", "share of prompts"], rows))
    print(f"hit rate {result['hit_rate']:.3f}; mean level {result['mean_level']:.2f}"
          f" ({result['mean_level'] / 50:.1%} of 50 steps skipped)")
    write_json(args.json, result)
    return 0
