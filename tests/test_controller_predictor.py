"""The Optimal-K predictor: the similarity-table default, the trained logistic model, `argus train-predictor`."""

import argparse
import dataclasses
import json
import math
import random

import pytest

from controller import train_predictor
from controller.predictor import Lookup, SimilarityPredictor, TrainedPredictor, feature_vector, stored_level_at_most
from controller.profiles import QualityModel
from controller.quality_samples import QualitySample, embedder_mismatch
from controller.similarity import SimilarityTable
from engine.cli import main

LEVELS = (0, 5, 10, 15, 20, 25)
ALL_STORED = LEVELS[1:]
CLIP = SimilarityTable.bundled("clip")
MODEL = QualityModel(CLIP)
WORDS = "a red cat sitting on an old wooden chair in the warm evening light oil painting".split()


def _prompt(rng: random.Random) -> str:
    return " ".join(rng.sample(WORDS, rng.randint(3, len(WORDS))))


def _samples(n: int, seed: int, with_neighbour: bool = False) -> list[QualitySample]:
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        s = rng.uniform(0.55, 1.0)
        level = rng.choice(ALL_STORED)
        prompt = _prompt(rng)
        neighbour = _prompt(rng) if with_neighbour else None
        samples.append(QualitySample(s, level, MODEL.quality(level, s, prompt), prompt, neighbour))
    return samples


def test_stored_level_at_most():
    assert stored_level_at_most(25, (10, 15, 20, 25)) == 25
    assert stored_level_at_most(25, (10, 15)) == 15
    assert stored_level_at_most(5, (10, 15)) == 0
    assert stored_level_at_most(20, ()) == 0


def test_similarity_predictor_follows_the_table_within_the_stored_levels():
    predictor = SimilarityPredictor(CLIP)
    assert predictor.predict(Lookup(None)) == 0
    assert predictor.predict(Lookup(0.97, ALL_STORED)) == 25
    assert predictor.predict(Lookup(0.97, (5, 10, 20))) == 20
    assert predictor.predict(Lookup(0.80, ALL_STORED)) == 10
    assert predictor.predict(Lookup(0.80, (15, 20, 25))) == 0  # nothing at or below 10 is stored
    assert predictor.predict(Lookup(0.50, ALL_STORED)) == 0
    assert predictor.predict(Lookup(0.99, ())) == 0


def test_trained_predictor_learns_the_sim_quality_model():
    predictor = TrainedPredictor.fit(_samples(4000, seed=1))
    table = SimilarityPredictor(CLIP)
    rng = random.Random(2)
    lookups = [Lookup(rng.uniform(0.55, 1.0), ALL_STORED, _prompt(rng)) for _ in range(500)]
    agree = sum(predictor.predict(x) == table.predict(x) for x in lookups)
    assert agree / len(lookups) > 0.85
    assert predictor.predict(Lookup(None, ALL_STORED, "a cat")) == 0
    assert predictor.predict(Lookup(0.999, ALL_STORED, "a cat")) == 25
    assert predictor.predict(Lookup(0.999, (10,), "a cat")) == 10
    # probability of staying above the target falls with the level and rises with similarity
    probabilities = [predictor.probability(k, Lookup(0.9, prompt="a cat")) for k in ALL_STORED]
    assert probabilities == sorted(probabilities, reverse=True)
    assert predictor.probability(20, Lookup(0.85)) < predictor.probability(20, Lookup(0.95))


def test_a_feature_of_one_value_in_training_does_not_decide_the_prediction():
    """Prompts all of three words: log_words's std came out 2e-16 (rounding), not 0, and was scaled by it, so a prompt
    of other length had P 0 (longer) or 1 (shorter) at every level, whatever its similarity."""
    three_words = [QualitySample(s.similarity, s.level, s.quality, "a red cat") for s in _samples(400, seed=6)]
    predictor = TrainedPredictor.fit(three_words)
    assert predictor.scale[predictor.features.index("log_words")] == 1.0
    prompts = ("cat", "a red cat", " ".join(WORDS))
    for similarity in (0.6, 0.8, 0.999):
        said = {predictor.predict(Lookup(similarity, ALL_STORED, prompt)) for prompt in prompts}
        assert len(said) == 1, (similarity, said)
    assert predictor.predict(Lookup(0.999, ALL_STORED, prompts[0])) == 25
    assert predictor.predict(Lookup(0.6, ALL_STORED, prompts[-1])) < 25


def test_trained_predictor_round_trips(tmp_path):
    predictor = TrainedPredictor.fit(_samples(1500, seed=3, with_neighbour=True), provenance="test")
    assert predictor.features[-1] == "word_overlap"
    path = tmp_path / "predictor.json"
    predictor.save(path)
    loaded = TrainedPredictor.load(path)
    assert json.loads(path.read_text())["version"] == 1
    rng = random.Random(4)
    for _ in range(100):
        lookup = Lookup(rng.uniform(0.6, 1.0), ALL_STORED, _prompt(rng), _prompt(rng))
        assert loaded.predict(lookup) == predictor.predict(lookup)
    with pytest.raises(ValueError, match="neighbour's prompt"):
        loaded.predict(Lookup(0.9, ALL_STORED, "a cat"))


def test_train_predictor_command(tmp_path, capsys):
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(vars(s)) + "\n" for s in _samples(1500, seed=5)))
    parser = argparse.ArgumentParser()
    train_predictor.add_arguments(parser)
    out = tmp_path / "model.json"
    args = parser.parse_args([str(samples), "--out", str(out), "--embedder", "clip"])
    assert train_predictor.run(args) == 0
    assert TrainedPredictor.load(out).target == 95.0
    printed = capsys.readouterr().out
    assert "held-out" in printed and "table" in printed


def test_train_predictor_holds_out_every_level_of_samples_in_profile_quality_order(tmp_path, capsys):
    # `argus profile quality` writes each (prompt, neighbour)'s levels in turn: with five levels, every fifth line of
    # the file is at level 25. Held out by line, level 25 was never trained on and the trial fit raised KeyError: 25
    rng = random.Random(6)
    rows = []
    for _ in range(60):
        s, prompt, neighbour = rng.uniform(0.55, 1.0), _prompt(rng), _prompt(rng)
        rows += [QualitySample(s, k, MODEL.quality(k, s, prompt), prompt, neighbour) for k in ALL_STORED]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(vars(s)) + "\n" for s in rows))
    parser = argparse.ArgumentParser()
    train_predictor.add_arguments(parser)
    assert train_predictor.run(parser.parse_args([str(samples), "--out", str(tmp_path / "model.json")])) == 0
    table_rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    scored = {int(row[0]): int(row[1]) for row in table_rows if row and row[0].isdigit()}
    assert scored == {k: 12 for k in ALL_STORED}  # every level scored, on a fifth of its 60 samples


@pytest.mark.parametrize(("prompts", "unscored"), [(4, "any level"), (6, "levels 20, 25")])
def test_train_predictor_says_which_levels_have_too_few_samples_to_score(tmp_path, capsys, prompts, unscored):
    """A level of fewer than 5 samples holds none out: with every level so, an empty table was printed, its headers
    alone, and no word of why."""
    rng = random.Random(6)
    rows = []
    for i in range(prompts):
        s, prompt = rng.uniform(0.55, 1.0), _prompt(rng)
        levels = ALL_STORED if i < 4 else ALL_STORED[:3]  # 20 and 25: 4 samples each
        rows += [QualitySample(s, k, MODEL.quality(k, s, prompt), prompt) for k in levels]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(vars(s)) + "\n" for s in rows))
    parser = argparse.ArgumentParser()
    train_predictor.add_arguments(parser)
    assert train_predictor.run(parser.parse_args([str(samples), "--out", str(tmp_path / "model.json")])) == 0
    printed = capsys.readouterr().out
    assert (
        f"accuracy not scored at {unscored}: too few samples (fewer than 5 at each), and every 5th of a level is held"
        " out to score it (profile more prompts: argus profile quality)\n"
    ) in printed
    assert ("trained accuracy" in printed) is (unscored != "any level")  # no table of headers alone


def test_train_predictor_scores_the_features_of_the_predictor_it_writes(tmp_path, capsys):
    # one sample that names no neighbour's prompt, held out (every fifth of its level): the trial fit, on the rest,
    # took word overlap, and scoring that sample failed the command in a ValueError traceback
    rows = _samples(200, seed=8, with_neighbour=True)
    held_out = [s for s in rows if s.level == 10][4]
    rows = [dataclasses.replace(s, neighbour_prompt=None) if s is held_out else s for s in rows]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(vars(s)) + "\n" for s in rows))
    parser = argparse.ArgumentParser()
    train_predictor.add_arguments(parser)
    assert train_predictor.run(parser.parse_args([str(samples), "--out", str(tmp_path / "model.json")])) == 0
    assert TrainedPredictor.load(tmp_path / "model.json").features == ("similarity", "log_words")
    assert "features: similarity, log_words\n" in capsys.readouterr().out


@pytest.mark.parametrize("l2", ["0", "-1", "nan"])
def test_train_predictor_refuses_a_penalty_that_is_not_positive(tmp_path, l2, capsys):
    """Refused as the flag is read, by its name: the samples were read first, then the fit said `l2 must be > 0`."""
    parser = argparse.ArgumentParser(prog="argus train-predictor")
    train_predictor.add_arguments(parser)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["samples.jsonl", "--out", str(tmp_path / "model.json"), "--l2", l2])
    assert exited.value.code == 2
    number = "finite number" if l2 == "nan" else "number"
    assert (
        f"argus train-predictor: error: argument --l2: expected a {number} > 0, not '{l2}'" in capsys.readouterr().err
    )


def test_train_predictor_does_not_write_over_its_samples(tmp_path, capsys):
    """`--out` the samples file replaced the samples (hours of `argus profile quality`) with the predictor."""
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(vars(s)) + "\n" for s in _samples(50, seed=7)))
    kept = samples.read_text()
    same = f"{tmp_path}/./samples.jsonl"  # the same file by another name
    assert main(["train-predictor", str(samples), "--out", same]) == 2
    assert f"argus train-predictor: error: --out {same} is the input {samples}" in capsys.readouterr().err
    assert samples.read_text() == kept


def test_the_predictor_keeps_whose_similarities_its_samples_are(tmp_path, capsys):
    """Fit on one embedder's similarities, a predictor chooses levels by that embedder's scale; it did not say which,
    so an engine of another embedder took it without a word (serve now refuses it: test_control_setup)."""
    clip_model = "clip:0123456789abcdef"
    of_clip = [
        dataclasses.replace(s, embedder="clip", embedder_identity=clip_model, model="sdxl:0123456789abcdef")
        for s in _samples(200, seed=8)
    ]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(vars(s)) + "\n" for s in of_clip))
    out = tmp_path / "model.json"
    assert main(["train-predictor", str(samples), "--out", str(out)]) == 0
    assert TrainedPredictor.load(out).embedder == "clip"
    assert TrainedPredictor.load(out).embedder_identity == clip_model  # its model: serve refuses another's
    assert TrainedPredictor.load(out).model == "sdxl:0123456789abcdef"  # serve warns of another's
    assert "similarities: the clip embedder" in capsys.readouterr().out

    # its table is scored on the samples' similarities: another embedder's table would be read on the wrong scale
    assert main(["train-predictor", str(samples), "--out", str(out), "--embedder", "hash"]) == 2
    assert "the clip embedder's similarities, not the hash embedder's" in capsys.readouterr().err
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(samples.read_text() + json.dumps(vars(dataclasses.replace(of_clip[0], embedder="hash"))) + "\n")
    assert main(["train-predictor", str(mixed), "--out", str(out)]) == 2
    assert f"{mixed}: samples of several embedders (clip, hash)" in capsys.readouterr().err


def test_samples_that_name_no_embedder_are_kept_as_the_embedders_given(tmp_path, capsys):
    """Unnamed, --embedder's similarities were scored but not written down: `argus serve` took the predictor under any
    embedder, whose scale of similarity it was not fit on."""
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(vars(s)) + "\n" for s in _samples(200, seed=8)))
    out = tmp_path / "model.json"
    assert main(["train-predictor", str(samples), "--out", str(out), "--embedder", "clip"]) == 0
    assert TrainedPredictor.load(out).embedder == "clip"
    assert TrainedPredictor.load(out).embedder_identity is None  # which model of it, the samples do not say
    assert "the clip embedder (as --embedder says: the samples do not name one)" in capsys.readouterr().out
    # what `argus serve --embedder hash` refuses it by (engine/control/setup.py)
    assert embedder_mismatch(TrainedPredictor.load(out).embedder, "hash")
    assert main(["train-predictor", str(samples), "--out", str(out)]) == 0
    assert TrainedPredictor.load(out).embedder is None
    assert "give --embedder to have the predictor keep it" in capsys.readouterr().out


@pytest.mark.parametrize(("steps", "refused"), [(50, None), (None, None), (20, "made with N=20 denoising steps")])
def test_train_predictor_refuses_samples_of_other_steps_than_the_engines_levels(tmp_path, capsys, steps, refused):
    """Level 10 of 20 steps reuses half an image's steps, of the engine's 50 a fifth: a predictor fit on samples of
    20 steps said which of the engine's levels keep the target from what levels twice as deep did."""
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(vars(s) | {"steps": steps}) + "\n" for s in _samples(200, seed=9)))
    out = tmp_path / "model.json"
    assert main(["train-predictor", str(samples), "--out", str(out)]) == (2 if refused else 0)
    if refused:
        assert f"{samples}: {refused}, and the engine's levels are steps of N=50" in capsys.readouterr().err
        assert not out.exists()


@pytest.mark.parametrize(("high", "steps"), [(50, 50), (60, None)])
def test_train_predictor_refuses_samples_at_a_level_of_n_steps_or_more(tmp_path, capsys, high, steps):
    """A level is the steps an image resumes from of N, so below N (as `argus serve --levels` takes it): samples at
    50 and 60 of 50 steps were fit, and the predictor written could choose them."""
    samples = tmp_path / "samples.jsonl"
    rows = [vars(s) | {"steps": steps} for s in _samples(200, seed=9)]
    rows[7]["level"] = rows[8]["level"] = high
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "model.json"
    assert main(["train-predictor", str(samples), "--out", str(out)]) == 2
    said = f"argus train-predictor: error: {samples}: samples at levels [{high}], not below N=50 steps"
    error = capsys.readouterr().err
    assert error.startswith(said) and error.count("\n") == 1, error
    assert not out.exists()


def test_a_predictor_that_cannot_be_written_is_one_line_after_its_figures(tmp_path, capsys):
    """Checked writable as the command began, the file may not be by its end (a full disk here): that was an
    OSError traceback, and the held-out figures went unprinted."""
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(vars(s)) + "\n" for s in _samples(300, seed=5)))
    parser = argparse.ArgumentParser()
    train_predictor.add_arguments(parser)
    with pytest.raises(SystemExit) as exited:
        train_predictor.run(parser.parse_args([str(samples), "--out", "/dev/full", "--embedder", "clip"]))
    said = "argus train-predictor: could not write the predictor to /dev/full: No space left on device"
    assert str(exited.value) == said
    assert "held-out" in capsys.readouterr().out


def test_the_features_a_saved_predictor_was_fit_on_are_worked_out_the_same_way():
    """A saved predictor's weights are of these very numbers: log(1 + words), and the Jaccard overlap of the two
    prompts' words (1 for two empty prompts, nothing told apart)."""
    names = ("similarity", "log_words", "word_overlap")
    assert feature_vector(names, 0.9, "A red cat", "a blue CAT") == [0.9, math.log(4), 2 / 4]
    assert feature_vector(names, 0.9, "", "")[2] == 1.0


FIELDS = dict(features=("similarity",), mean=(0.9,), scale=(0.1,), weights={5: (0.0, 1.0)}, target=95.0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(weights={0: (0.0, 1.0)}), "level 0"),  # level 0 is the full run, P 1 by definition
        (dict(scale=(0.1, 0.1)), "one value per feature"),
        (dict(scale=(0.0,)), "scales finite and > 0"),  # a division by 0 at the first hit
        (dict(scale=(-0.1,)), "scales finite and > 0"),  # every feature's effect turned round
        (dict(min_probability=1.5), "min_probability within 0..1"),
    ],
)
def test_a_malformed_predictor_is_refused_when_made_not_at_its_first_hit(bad, match):
    TrainedPredictor(min_probability=0.5, provenance="", **FIELDS)
    with pytest.raises(ValueError, match=match):
        TrainedPredictor(**{"min_probability": 0.5, "provenance": "", **FIELDS, **bad})


def test_a_level_is_served_when_its_probability_is_just_the_minimum_and_level_0_always_is():
    """min_probability is the least P a level needs, itself included; level 0 is the full run, sure to keep the
    quality (train-predictor scores held-out samples of level 0 so)."""
    predictor = TrainedPredictor(min_probability=0.5, provenance="", **{**FIELDS, "weights": {5: (0.0, 0.0)}})
    assert predictor.probability(5, Lookup(0.9)) == 0.5
    assert predictor.predict(Lookup(0.9, (5,))) == 5
    assert predictor.probability(0, Lookup(None)) == 1.0


def test_samples_of_full_runs_are_left_out_of_the_fit_and_a_quality_at_the_target_is_good():
    """Profiles hold the level-0 reference images: each level's model is of images served from a neighbour. A
    sample whose quality is the target itself keeps it (>= target)."""
    at_target = [QualitySample(s / 100, 5, 95.0, "a red cat") for s in range(60, 100)]
    full_runs = [QualitySample(s / 100, 0, 100.0, "a red cat") for s in range(60, 100)]
    predictor = TrainedPredictor.fit(at_target + full_runs)
    assert set(predictor.weights) == {5}
    assert predictor.probability(5, Lookup(0.8, prompt="a red cat")) > 0.5


def test_the_penalty_pulls_the_feature_weights_to_0_and_leaves_the_intercept_free():
    """l2 shrinks what the features say, not the level's own odds: a level whose every sample kept the quality stays
    likely to, however heavy the penalty; a zero penalty, with no fit for a separable level, is refused."""
    split = [QualitySample(s / 100, 5, 100.0 if s > 80 else 90.0, "a red cat") for s in range(60, 100)]
    all_good = [QualitySample(s / 100, 10, 100.0, "a red cat") for s in range(60, 100)]
    light, heavy = (TrainedPredictor.fit(split + all_good, l2=l2) for l2 in (1.0, 1e4))
    similarity = light.features.index("similarity") + 1
    assert abs(light.weights[5][similarity]) > 1.0 > 100 * abs(heavy.weights[5][similarity])
    assert heavy.probability(10, Lookup(0.7, prompt="a red cat")) > 0.9
    with pytest.raises(ValueError, match="l2 must be > 0"):
        TrainedPredictor.fit(split, l2=0.0)
