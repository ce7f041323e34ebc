"""`argus bench cache` at a small size writes exactly its documented JSON; the replay reads prompts as loadgen does and
agrees with calibrate's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from engine.cache import calibrate
from engine.cache.embedders import make_embedder
from engine.cache.thresholds import table_for
from engine.cli import main
from loadgen.bench import cache_bench
from loadgen.prompts import load_prompts

PROMPTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "prompts" / "diffusiondb_5k.txt"


@pytest.mark.parametrize("vectors", ["random", "prompts"])
def test_small_bench_writes_the_documented_json(tmp_path, capsys, vectors):
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")  # added by `argus bench` for every benchmark
    cache_bench.add_arguments(parser)
    out = tmp_path / "cache.json"
    args = parser.parse_args(
        [
            "--entries",
            "2000",
            "--timed-inserts",
            "200",
            "--lookups",
            "200",
            "--latents",
            "20",
            "--vectors",
            vectors,
            "--json",
            str(out),
        ]
    )
    assert cache_bench.run(args) == 0
    data = json.loads(out.read_text())
    assert list(data) == [
        "entries",
        "dim",
        "lookup_p50_us",
        "lookup_p99_us",
        "insert_per_s",
        "bytes_per_entry",
        "latent_bytes_per_entry",
        "vectors",
        "traced_bytes_per_entry",
        "ef",
        "m",
        "lookups",
    ]
    assert (data["entries"], data["dim"], data["latent_bytes_per_entry"]) == (2000, 1024, 4 * 128 * 128 * 2)
    assert 0 < data["lookup_p50_us"] <= data["lookup_p99_us"] and data["insert_per_s"] > 0
    # the tables' figures too: by kind of lookup, the CPU time beside the clock's, and recall
    assert data["vectors"] == vectors and list(data["lookups"]) == ["near-duplicate", "unrelated", "all"]
    assert data["lookups"]["all"]["p99"] == data["lookup_p99_us"]
    assert 0 < data["lookups"]["near-duplicate"]["cpu_p50"] and 0 <= data["lookups"]["near-duplicate"]["recall"] <= 1
    printed = capsys.readouterr().out
    assert "recall@1" in printed
    # grouped in thousands, as the rows of bytes held beside it are: it printed 131072
    assert "131,072  4 x 128 x 128 float16" in printed and "2,000  " in printed


def test_replay_reads_prompts_as_loadgen_reads_them(tmp_path):
    """With calibrate's reader, a blank line was replayed as an empty prompt, and a file of them as that many."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\n\na red fox, at dusk\n   \na blue whale\n")
    out = tmp_path / "replay.json"
    assert main(["bench", "cache", "--replay", str(prompts), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["prompts"] == len(load_prompts(prompts)) == 3


def test_replay_through_the_cache_matches_the_exact_replay():
    prompts = load_prompts(PROMPTS)[:400]
    embedder = make_embedder("hash")
    result = cache_bench.replay_hit_rates(prompts, embedder, table_for("hash"))
    exact = calibrate.served(calibrate.replay_similarities(embedder.embed(prompts)), table_for("hash"))
    assert sum(result["served"].values()) == pytest.approx(1.0)
    # hnswlib is approximate, but at 400 prompts it should find the same best earlier prompt
    for level, share in exact.items():
        assert result["served"][str(level)] == pytest.approx(share, abs=2 / 400)
