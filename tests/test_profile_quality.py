"""`argus profile quality` end to end: a real tiny worker process, a tiny CLIP built here, JSONL samples out."""

import argparse
import math
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import save_tiny_clip

from controller import profile_quality
from controller.profile_quality import SAMPLES_KIND
from controller.quality_samples import read_quality_samples
from controller.versioned import read_versioned
from engine.cli import build_parser, main
from engine_process import ROOT

PROMPTS = [
    "a lighthouse on a cliff at dusk, oil painting",
    "a lighthouse on a cliff at night, oil painting",
    "a red fox in a snowy forest, photograph",
]
STEPS = 12  # the tiny worker caches levels 5, 10, ... : below N = 12, levels 5 and 10


def test_profile_quality_writes_samples_the_controller_reads(tmp_path):
    save_tiny_clip(tmp_path / "clip")
    prompts = tmp_path / "parti.tsv"
    prompts.write_text("Prompt\tCategory\n" + "".join(f"{p}\tTest\n" for p in PROMPTS))
    out = tmp_path / "samples.jsonl"
    command = [sys.executable, "-m", "controller.profile_quality", str(prompts), "--clip", str(tmp_path / "clip")]
    command += ["--backend", "tiny", "--steps", str(STEPS), "--threads", "1", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr

    samples = read_quality_samples(out)
    exact = [s for s in samples if s.level == 0]
    resumed = [s for s in samples if s.level > 0]
    assert sorted(s.prompt for s in exact) == sorted(PROMPTS)
    assert all(s.quality == 100.0 and s.similarity is None for s in exact)
    # every prompt resumed from its 2 neighbours (the other two) at both levels
    assert len(resumed) == len(PROMPTS) * 2 * 2
    assert {s.level for s in resumed} == {5, 10}
    for s in resumed:
        assert s.prompt in PROMPTS and s.neighbour_prompt in PROMPTS and s.neighbour_prompt != s.prompt
        assert math.isfinite(s.quality) and s.quality > 0
        assert math.isfinite(s.similarity) and -1.0 <= s.similarity <= 1.0
        assert s.embedder == "hash"  # whose similarity: serve refuses a predictor of it with another embedder
    # a level is a share of the steps, and a quality a model's: serve refuses other steps, warns of another model
    assert {(s.steps, s.model[:5]) for s in samples} == {(STEPS, "tiny:")}
    assert {s.embedder_identity for s in resumed} == {"hash"}  # the hash embedder has no model folder
    # the two lighthouse prompts are each other's nearest neighbour (hash embedder)
    lighthouses = [s for s in resumed if "lighthouse" in s.prompt and "lighthouse" in s.neighbour_prompt]
    foxes = [s for s in resumed if "fox" in s.neighbour_prompt]
    assert min(s.similarity for s in lighthouses) > max(s.similarity for s in foxes)

    provenance = read_versioned(tmp_path / "samples.provenance.json", SAMPLES_KIND)
    assert provenance["samples"] == "samples.jsonl" and provenance["levels"] == [5, 10]
    assert provenance["steps"] == STEPS and provenance["model"] == samples[0].model
    assert "CLIPScore" in provenance["provenance"]


def test_the_sim_backend_is_not_offered_its_quality_is_modelled_not_measured(tmp_path, capsys):
    """--help offered sim (and its --time-scale), which the run then refused; docs/controller.md listed tiny|sdxl."""
    quality = ["profile", "quality", "prompts.txt", "--clip", "clip", "--out", str(tmp_path / "samples.jsonl")]
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args([*quality, "--backend", "sim"])
    assert refused.value.code == 2 and "invalid choice: 'sim'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args([*quality, "--help"])
    usage = capsys.readouterr().out
    assert "--backend {tiny,sdxl}" in usage and "--time-scale" not in usage
    assert build_parser().parse_args([*quality, "--backend", "sdxl"]).backend == "sdxl"


def test_a_batch_over_what_a_worker_runs_is_refused_by_its_flag(tmp_path, capsys):
    # sent on as the worker's --max-batch, which it refused: the profile ended in a traceback of the worker's usage
    quality = ["profile", "quality", "prompts.txt", "--clip", "clip", "--out", str(tmp_path / "samples.jsonl")]
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args([*quality, "--batch", "33"])
    assert refused.value.code == 2
    assert (
        "argument --batch: expected a number from 1 to 32 images (what the wire carries), not '33'"
        in capsys.readouterr().err
    )
    assert build_parser().parse_args([*quality, "--batch", "32"]).batch == 32


def test_the_prompts_are_not_written_over(tmp_path, capsys):
    """`--out` the prompt file replaced the prompts with the samples made from them."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"{p}\n" for p in PROMPTS))
    command = ["profile", "quality", str(prompts), "--clip", str(tmp_path / "clip"), "--out", str(prompts)]
    assert main(command) == 2
    assert f"argus profile quality: error: --out {prompts} is the input {prompts}" in capsys.readouterr().err
    assert prompts.read_text().splitlines() == PROMPTS


def test_samples_to_this_commands_own_output_are_refused_before_measuring(tmp_path):
    """`--out /dev/stdout` put the samples after the progress lines and the summary (no reader takes that file), and
    their provenance in /dev/stdout.provenance.json: made in /dev as root, refused to others after the whole run."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"{p}\n" for p in PROMPTS))
    command = [sys.executable, "-m", "engine.cli", "profile", "quality", str(prompts), "--clip", str(tmp_path / "clip")]
    done = subprocess.run([*command, "--out", "/dev/stdout"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    said = "argus profile quality: error: --out /dev/stdout is where this command prints its progress and summary"
    assert done.stderr.startswith(said), done.stderr
    assert not Path("/dev/stdout.provenance.json").exists()


def test_samples_to_a_stream_are_refused_before_measuring_their_provenance_having_no_file_beside_it(tmp_path, capsys):
    """`--out /dev/null` had the provenance written to /dev/null.provenance.json: made in /dev as root, refused to
    others after the whole run."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"{p}\n" for p in PROMPTS))
    command = ["profile", "quality", str(prompts), "--clip", str(tmp_path / "clip"), "--out", "/dev/null"]
    assert main(command) == 2
    assert (
        "argus profile quality: error: --out /dev/null is not a file (a device or a pipe): the samples' provenance is"
        " written beside them, in FILE.provenance.json; give a file\n"
    ) == capsys.readouterr().err
    assert not Path("/dev/null.provenance.json").exists()


def test_samples_whose_write_fails_leave_the_last_ones_whole(tmp_path):
    """The samples were written in place, line by line: a write cut short (Ctrl-C, a full disk; here a value JSON
    cannot hold, half-way through) left the first lines of the new samples where the last run's were, which
    train-predictor and serve --quality-profile then took for a whole profile when it ended at a line."""
    out = tmp_path / "samples.jsonl"
    out.write_text('{"similarity": null, "level": 0, "quality": 100.0, "prompt": "the last run"}\n')
    before = out.read_text()
    args = argparse.Namespace(out=str(out), embedder="hash")
    rows = [{"similarity": None, "level": 0, "quality": 100.0, "prompt": p} for p in PROMPTS]
    rows.insert(2, {"similarity": object(), "level": 5})
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        profile_quality._write(args, rows, [5, 10], {"steps": 50, "model": "tiny"}, ["made here"])
    assert out.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["samples.jsonl"]  # nothing half-written beside it


@pytest.mark.parametrize("unwritable", ["samples", "provenance"])
def test_samples_that_cannot_be_written_are_one_line(tmp_path, unwritable):
    """An OSError traceback at the end of a run of hours; its figures are printed before (run)."""
    out, provenance = tmp_path / "samples.jsonl", tmp_path / "samples.provenance.json"
    if unwritable == "samples":
        out.mkdir()  # a directory in the file's place (a full disk, a folder gone: likewise)
    else:
        provenance.mkdir()
    args = argparse.Namespace(out=str(out), embedder="hash")
    rows = [{"similarity": None, "level": 0, "quality": 100.0, "prompt": p} for p in PROMPTS]
    with pytest.raises(SystemExit) as exited:
        profile_quality._write(args, rows, [5, 10], {"steps": 50, "model": "tiny"}, ["made here"])
    what, path = ("samples", out) if unwritable == "samples" else ("samples' provenance", provenance)
    assert str(exited.value) == f"argus profile quality: could not write the {what} to {path}: Is a directory"
