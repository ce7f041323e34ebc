"""The commands beside `argus serve` that take `--similarity-table FILE` (what `argus calibrate --json` wrote): `argus
bench cache --replay` serves the replay by it, `argus train-predictor` scores it beside the predictor; a table of
another embedder is refused, naming the file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from controller.profiles import QualityModel
from controller.quality_samples import QualitySample
from controller.similarity import SimilarityTable
from engine.cli import main

# hash similarity 0.719: the bundled hash table serves the second at 10 (> 0.703), NIRVANA's table, which `argus
# calibrate --reference nirvana` writes unchanged, at 5 (> 0.65, not > 0.75)
PROMPTS = [
    "a red fox in a snowy forest at dawn, oil painting",
    "a red fox in a snowy forest",
    "a blue whale in the deep ocean",
    "blueprint of a steam locomotive, technical drawing",
]


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


@pytest.fixture
def calibrated(prompts, tmp_path) -> Path:
    table = tmp_path / "hash_table.json"
    command = ["calibrate", "--embedder", "hash", "--reference", "nirvana", "--prompts", str(prompts)]
    assert main([*command, "--json", str(table)]) == 0
    return table


def _of_embedder(table: Path, embedder: str) -> Path:
    other = table.with_name(f"{embedder}_table.json")
    other.write_text(json.dumps(json.loads(table.read_text()) | {"embedder": embedder, "embedder_identity": None}))
    return other


def _replay(prompts: Path, out: Path, *flags: str) -> dict:
    assert main(["bench", "cache", "--replay", str(prompts), "--json", str(out), *flags]) == 0
    return json.loads(out.read_text())


def test_the_replay_serves_by_the_given_table(prompts, calibrated, tmp_path, capsys):
    bundled = _replay(prompts, tmp_path / "bundled.json")
    given = _replay(prompts, tmp_path / "given.json", "--similarity-table", str(calibrated))
    assert bundled["served"]["10"] == given["served"]["5"] == 0.25
    assert given["served"]["10"] == bundled["served"]["5"] == 0
    assert given["thresholds"] == json.loads(calibrated.read_text())["thresholds"]
    assert (bundled["similarity_table"], given["similarity_table"]) == (None, str(calibrated))
    assert f"embedder hash, {calibrated}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (
            ("--replay", "{prompts}", "--similarity-table", "{minilm}"),
            "{minilm}: a table of the minilm embedder's similarities, not the hash embedder's",
        ),
        (("--replay", "{prompts}", "--similarity-table", ""), "--similarity-table is empty"),
        # the index benchmark serves nothing by a table: the flag would be ignored for minutes
        (("--similarity-table", "{table}"), "--similarity-table: only with --replay"),
    ],
)
def test_a_table_the_replay_cannot_serve_by_is_refused(flags, says, prompts, calibrated, capsys):
    names = {"prompts": prompts, "table": calibrated, "minilm": _of_embedder(calibrated, "minilm")}
    assert main(["bench", "cache", *(flag.format(**names) for flag in flags)]) == 2
    error = capsys.readouterr().err
    assert says.format(**names) in error and error.count("\n") == 1, error


def _samples_file(tmp_path: Path, embedder: str | None) -> Path:
    """Samples drawn from the sim quality model on the hash table, as `argus profile quality` writes them."""
    model, rng = QualityModel(SimilarityTable.bundled("hash")), random.Random(3)
    rows = []
    for _ in range(300):
        similarity, level = rng.uniform(0.4, 1.0), rng.choice((5, 10, 15, 20, 25))
        prompt = f"a {rng.choice(('red', 'blue'))} {rng.choice(('fox', 'whale', 'kite'))}"
        rows.append(
            QualitySample(similarity, level, model.quality(level, similarity, prompt), prompt, embedder=embedder)
        )
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(vars(row)) + "\n" for row in rows))
    return path


def _table_accuracy(printed: str) -> dict[int, float]:
    rows = [line.split() for line in printed.splitlines()]
    return {int(row[0]): float(row[-1]) for row in rows if row and row[0].isdigit()}


def test_train_predictor_scores_the_given_table(calibrated, tmp_path, capsys):
    samples, out = _samples_file(tmp_path, "hash"), tmp_path / "model.json"
    assert main(["train-predictor", str(samples), "--out", str(out), "--embedder", "hash"]) == 0
    bundled = capsys.readouterr().out
    assert main(["train-predictor", str(samples), "--out", str(out), "--similarity-table", str(calibrated)]) == 0
    given = capsys.readouterr().out
    assert "table (hash) accuracy" in bundled and f"table ({calibrated.name}) accuracy" in given
    # NIRVANA's thresholds are not the hash table the samples' qualities were drawn from: it is scored, not that one
    assert _table_accuracy(given) != _table_accuracy(bundled)


@pytest.mark.parametrize(
    ("samples_of", "flags", "says"),
    [
        ("clip", (), "a table of the hash embedder's similarities, and {samples} holds the clip embedder's"),
        (None, ("--embedder", "minilm"), "a table of the hash embedder's similarities, not the minilm embedder's"),
    ],
)
def test_train_predictor_refuses_a_table_of_another_embedder(samples_of, flags, says, calibrated, tmp_path, capsys):
    samples = _samples_file(tmp_path, samples_of)
    argv = ["train-predictor", str(samples), "--out", str(tmp_path / "m.json"), "--similarity-table", str(calibrated)]
    assert main([*argv, *flags]) == 2
    error = capsys.readouterr().err
    assert says.format(samples=samples) in error and error.count("\n") == 1, error
    assert not (tmp_path / "m.json").exists()


def test_train_predictor_refuses_a_table_of_another_model_of_the_samples_embedder(calibrated, tmp_path, capsys):
    """Two CLIP folders differ in scale as two embedders do: `argus serve` refuses such a table, and train-predictor
    scored it on the samples' similarities, printing the accuracy of a table read on another scale."""
    table = calibrated.with_name("clip_a.json")
    table.write_text(
        json.dumps(json.loads(calibrated.read_text()) | {"embedder": "clip", "embedder_identity": "clip:" + "a" * 16})
    )
    samples = _samples_file(tmp_path, "clip")
    rows = [json.loads(line) | {"embedder_identity": "clip:" + "b" * 16} for line in samples.read_text().splitlines()]
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["train-predictor", str(samples), "--out", str(tmp_path / "m.json"), "--similarity-table", str(table)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert f"{table}: a table of the embedder model clip:{'a' * 16}, and {samples} holds the similarities" in error
    assert not (tmp_path / "m.json").exists()


def test_train_predictor_does_not_write_over_the_table_it_scores(calibrated, tmp_path, capsys):
    """`--out` the --similarity-table file replaced the calibrated table with the predictor, exit 0: its samples were
    kept from that, its table not."""
    kept = calibrated.read_text()
    samples = _samples_file(tmp_path, "hash")
    argv = ["train-predictor", str(samples), "--out", str(calibrated), "--similarity-table", str(calibrated)]
    assert main(argv) == 2
    assert f"--out {calibrated} is the input {calibrated}" in capsys.readouterr().err
    assert calibrated.read_text() == kept
