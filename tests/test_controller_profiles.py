"""Profiles: the bundled SD-XL latency table, the Proteus capacity rule, the sim quality model, D[K'][K]."""

import dataclasses
import json
import math
import re
import statistics
from pathlib import Path

import pytest

from controller.profiles import DegradationMatrix, LatencyProfile, QualityModel
from controller.quality_samples import QualitySample, read_quality_samples
from controller.similarity import SimilarityTable
from controller.versioned import write_versioned

LEVELS = (0, 5, 10, 15, 20, 25)
CLIP = SimilarityTable.from_pairs([(0.95, 25), (0.90, 20), (0.85, 15), (0.75, 10), (0.65, 5)])


# -- similarity table --------------------------------------------------------------------
def test_bundled_clip_table_is_the_published_one():
    assert SimilarityTable.bundled("clip") == CLIP
    assert CLIP.levels == LEVELS


def test_level_for_and_bands():
    assert CLIP.level_for(None) == 0
    assert CLIP.level_for(0.99) == 25
    assert CLIP.level_for(0.95) == 20  # strictly above the threshold, as MoDM does
    assert CLIP.level_for(0.70) == 5
    assert CLIP.level_for(0.5) == 0
    assert CLIP.band(25) == (0.95, 1.0)
    assert CLIP.band(10) == (0.75, 0.85)
    assert CLIP.band(0) == (-1.0, 0.65)


def test_a_table_must_fall():
    with pytest.raises(ValueError):
        SimilarityTable(((0.9, 20), (0.95, 25)))


# -- latency -----------------------------------------------------------------------------
def test_bundled_profile_matches_the_published_figures():
    profile = LatencyProfile.bundled()
    assert profile.levels == LEVELS
    assert profile.latency(0, 1) == pytest.approx(5.1, abs=0.1)  # reference: 5.13 s, 50 steps, batch 1
    # roughly 0.1 s per step: 25 fewer steps save about 2.5 s
    assert profile.latency(0, 1) - profile.latency(25, 1) == pytest.approx(2.25, abs=0.3)
    for k in LEVELS:
        per_image = [profile.latency(k, b) / b for b in range(1, profile.max_batch + 1)]
        assert per_image == sorted(per_image, reverse=True)
        assert per_image[0] / per_image[-1] < 2.0  # batching gains at most about 2x
    assert "reference.md" in profile.provenance


def test_bundled_table_is_its_recorded_formula():
    profile = LatencyProfile.bundled()
    rebuilt = LatencyProfile.from_model(
        profile.name,
        profile.provenance,
        levels=profile.levels,
        steps=profile.steps,
        max_batch=profile.max_batch,
        **profile.derivation,
    )
    for k in LEVELS:
        assert rebuilt.latency_s[k] == pytest.approx(profile.latency_s[k])


def test_capacity_is_the_largest_batch_under_half_the_slo():
    profile = LatencyProfile.bundled()
    # level 25: batches take 2.85 * (1 + 0.5 (b - 1)) s; under 7.5 s the largest is b = 4 (7.125 s)
    assert profile.best_batch(25, 7.5) == 4
    assert profile.capacity_rps(25, 15.0) == pytest.approx(4 / profile.latency(25, 4))
    # level 0 at batch 1 takes 5.1 s: a 10 s SLO leaves 5 s, so not even batch 1 fits
    assert profile.capacity_rps(0, 10.0) == 0.0
    assert profile.best_batch(0, 1.0) == 0
    assert profile.best_batch(0, 1e6) == profile.max_batch


def test_the_capacity_table_in_docs_controller_md_is_the_rule_s():
    """docs/controller.md tabled capacities per worker by SLO; its 15 s and 30 s rows at K=15 (0.400, 0.467) were
    counted with the batch that takes exactly half the SLO, which the rule no longer counts (0.356, 0.457)."""
    doc = (Path(__file__).parent.parent / "docs" / "controller.md").read_text()
    table = doc.split("With this profile, per worker:", 1)[1].split("\n\n", 2)[1]
    profile = LatencyProfile.bundled()
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
    assert rows
    for row in rows:
        slo_s = float(row[0].split()[0])
        tabled = [float(cell.split()[0]) for cell in row[1:]]
        assert tabled == [round(profile.capacity_rps(level, slo_s), 3) for level in LEVELS], row[0]


def test_profile_round_trips_and_checks_its_version(tmp_path):
    profile = LatencyProfile.from_model(
        "toy", "made up for a test", fixed_s=0.5, step_s=0.1, batch_marginal=0.5, levels=LEVELS, steps=50, max_batch=4
    )
    path = tmp_path / "p.json"
    profile.save(path)
    assert LatencyProfile.load(path) == profile
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["provenance"] == "made up for a test"
    data["version"] = 2
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError):
        LatencyProfile.load(path)


@pytest.mark.parametrize("steps", [50.7, 50.0, "50", True, 0, None])
def test_a_profile_whose_steps_are_not_a_whole_number_is_refused_naming_the_field(tmp_path, steps):
    """int() read 50.7 and "50" as 50, and true as 1: a profile of other steps than it said, planned with in silence."""
    path = tmp_path / "p.json"
    LatencyProfile.bundled("tiny_cpu").save(path)
    data = json.loads(path.read_text())
    data["steps"] = steps
    path.write_text(json.dumps(data))
    said = re.escape(f"{path}: steps {steps!r} is not a number of denoising steps")
    with pytest.raises(ValueError, match=f"^{said}$"):
        LatencyProfile.load(path)


def test_the_model_a_profile_was_measured_on_is_kept_through_its_file_and_the_engines_changes(tmp_path):
    """The engine warns of a profile of another model than it serves (test_control_setup): a profile scaled to a sim
    engine's clock or cut to its workers' batches is still the model's it was measured on."""
    measured = dataclasses.replace(LatencyProfile.bundled("tiny_cpu"), model="tiny:0123456789abcdef")
    measured.save(tmp_path / "p.json")
    loaded = LatencyProfile.load(tmp_path / "p.json")
    assert loaded == measured
    assert loaded.scaled(0.5).model == loaded.limited_to(1).model == "tiny:0123456789abcdef"
    LatencyProfile.bundled("tiny_cpu").save(tmp_path / "unsaid.json")  # a profile that does not say: none written
    assert "model" not in json.loads((tmp_path / "unsaid.json").read_text())


def test_a_batch_that_takes_as_long_as_a_smaller_one_is_accepted():
    """A latency must not fall with batch size; a flat one (an idle GPU's, or two times rounded alike) is a profile."""
    assert LatencyProfile("flat", 50, {0: (1.0, 1.0, 1.5)}, "").latency(0, 2) == 1.0


@pytest.mark.parametrize("row", [(2.0, 1.0), (float("nan"), 1.0), (1.0, float("nan")), (1.0, float("inf"))])
def test_profile_rejects_latency_that_falls_with_batch_or_is_not_finite(row):
    with pytest.raises(ValueError, match="finite, positive and not fall"):
        LatencyProfile("bad", 50, {0: row}, "")


# -- quality model -----------------------------------------------------------------------
def test_quality_is_100_at_level_0_and_about_95_at_each_threshold():
    model = QualityModel(CLIP)
    assert model.quality(0, None, "a") == 100.0
    assert model.quality(0, 0.3, "a") == 100.0
    for threshold, level in CLIP.thresholds:
        assert model.expected(level, threshold) == pytest.approx(95.0)
        noisy = [model.quality(level, threshold, f"prompt {i}") for i in range(400)]
        assert statistics.mean(noisy) == pytest.approx(95.0, abs=0.3)
        assert 0.9 < statistics.stdev(noisy) < 1.5


def test_quality_falls_with_level_and_rises_with_similarity():
    model = QualityModel(CLIP)
    for s in (0.5, 0.7, 0.8, 0.9, 0.97, 1.0):
        qualities = [model.quality(k, s, "same prompt") for k in LEVELS[1:]]
        assert qualities == sorted(qualities, reverse=True)
    for k in LEVELS[1:]:
        by_similarity = [model.expected(k, s / 100) for s in range(40, 101)]
        assert by_similarity == sorted(by_similarity)
        assert all(0.0 <= model.quality(k, s / 100, f"p{s}") <= 100.0 for s in range(0, 101))


def test_noise_is_fixed_by_the_prompt_key():
    model = QualityModel(CLIP)
    assert model.quality(20, 0.9, "a cat") == model.quality(20, 0.9, "a cat")
    assert model.quality(20, 0.9, "a cat") != model.quality(20, 0.9, "a dog")


def test_a_miss_cannot_run_above_level_0():
    with pytest.raises(ValueError, match="miss"):
        QualityModel(CLIP).quality(5, None, "x")


# -- degradation -------------------------------------------------------------------------
def test_degradation_from_the_model_is_zero_at_the_exact_level_and_grows_with_it():
    matrix = DegradationMatrix.from_quality_model(QualityModel(CLIP))
    assert matrix.levels == LEVELS
    assert all(not matrix.allowed(kp, 0) and matrix.loss(kp, 0) == math.inf for kp in LEVELS[1:])
    for k in LEVELS:
        assert matrix.loss(0, k) == 0.0
        losses = [matrix.loss(kp, k) for kp in LEVELS[1:]] if k else []
        assert all(loss > 0 for loss in losses) and losses == sorted(losses)
        # below its own level a class loses less: the gain the MILP weighs against capacity
        assert all(matrix.loss(kp, k) <= matrix.loss(k, k) for kp in LEVELS if kp <= k)
    # a class served at its own level is above the target on average (its band starts at the 95% threshold)
    assert all(95.0 < matrix.quality(k, k) < 100.0 for k in LEVELS[1:])


def _model_samples(model: QualityModel, n: int = 3000) -> list[QualitySample]:
    samples = []
    for i in range(n):
        s = 0.6 + 0.4 * (i % 200) / 199
        level = LEVELS[1 + (i // 200) % 5]
        samples.append(QualitySample(s, level, model.quality(level, s, f"prompt {i}"), f"prompt {i}"))
    return samples


def test_degradation_from_measured_samples_agrees_with_the_model(tmp_path):
    model = QualityModel(CLIP)
    path = tmp_path / "quality.jsonl"
    made_by = {"steps": 50, "model": "sdxl:0123456789abcdef"}
    path.write_text("".join(json.dumps(vars(s) | made_by) + "\n" for s in _model_samples(model)))
    measured = DegradationMatrix.load_profiled(path, CLIP, "clip", 50)
    assert measured.model == "sdxl:0123456789abcdef"  # the engine warns if it serves another (test_control_setup)
    modelled = DegradationMatrix.from_quality_model(model)
    for k in LEVELS[1:]:
        for kp in LEVELS:
            assert measured.quality(kp, k) == pytest.approx(modelled.quality(kp, k), abs=1.5)
            if kp > k:
                assert measured.loss(kp, k) >= measured.loss(LEVELS[LEVELS.index(kp) - 1], k)


def test_class_0_at_the_higher_levels_is_its_far_neighbours_quality():
    """What Clipper-HT and Proteus serve a prompt whose neighbour is too far for any level from (a miss runs at 0):
    their plans expected it at 100."""
    model = QualityModel(CLIP)
    assert DegradationMatrix.from_quality_model(model).quality(25, 0) == pytest.approx(100.0 - model.max_loss)
    hits = [sample for sample in _model_samples(model) if CLIP.level_for(sample.similarity)]
    far = [QualitySample(0.3, kp, model.quality(kp, 0.3, f"far {i}")) for i in range(40) for kp in LEVELS[1:]]
    measured = DegradationMatrix.from_samples(hits + far, CLIP, "test")
    for kp in LEVELS[1:]:
        assert measured.quality(kp, 0) == pytest.approx(model.expected(kp, 0.3), abs=1.0)
        assert not measured.allowed(kp, 0) and measured.loss(kp, 0) == math.inf  # never a route a plan takes
    # none measured: the lowest class's, which no farther neighbour beats
    unmeasured = DegradationMatrix.from_samples(hits, CLIP, "test")
    assert all(unmeasured.quality(kp, 0) == unmeasured.quality(kp, 5) for kp in LEVELS[1:])


def test_degradation_from_banded_json(tmp_path):
    bands = {
        str(k): {
            f"{lo:.2f}-{hi:.2f}": 100.0 - k * (1.0 - lo)
            for lo, hi in [(0.65, 0.75), (0.75, 0.85), (0.85, 0.90), (0.90, 0.95), (0.95, 1.0)]
        }
        for k in LEVELS[1:]
    }
    path = tmp_path / "bands.json"
    path.write_text(json.dumps({"version": 1, "kind": "quality_profile", "provenance": "test", "quality": bands}))
    assert len(read_quality_samples(path)) == 25
    matrix = DegradationMatrix.load_profiled(path, CLIP, "clip", 50)
    # class 25 is the band (0.95, 1.0], midpoint 0.975: quality 100 - K * 0.05
    assert matrix.quality(20, 25) == pytest.approx(100 - 20 * 0.05)
    assert matrix.loss(25, 20) == pytest.approx(25 * 0.1)


def test_a_class_measured_better_above_its_own_level_is_capped_at_its_own_level():
    """Noise made class 10 measure 90 at its own level and 96 above it: above, it is taken at 90, or the MILP would
    serve the class faster for a better image."""
    samples = [
        QualitySample(threshold + 0.01, kp, 90.0 if (k, kp) == (10, 10) else 99.0 - kp / 5)
        for threshold, k in CLIP.thresholds
        for kp in LEVELS[1:]
    ]
    matrix = DegradationMatrix.from_samples(samples, CLIP, "test")
    assert [matrix.quality(kp, 10) for kp in LEVELS] == [100.0, 98.0, 90.0, 90.0, 90.0, 90.0]


def test_degradation_needs_every_class_at_every_level():
    samples = [QualitySample(0.97, 25, 96.0)]
    with pytest.raises(ValueError, match="no measured quality"):
        DegradationMatrix.from_samples(samples, CLIP, "test")


def test_a_jsonl_file_of_one_sample_is_one_sample_not_a_banded_table(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"similarity": 0.9, "level": 5, "quality": 97.0, "prompt": "a cat"}) + "\n")
    assert read_quality_samples(path) == [QualitySample(0.9, 5, 97.0, "a cat")]


def test_a_prompt_holding_a_line_separator_is_one_sample(tmp_path):
    """JSON lets U+2028 and NEL stand raw in a string: the file was split there, its prompt read as two lines that
    are not JSON, and every line after it named one line too far on."""
    path = tmp_path / "samples.jsonl"
    prompt = "a cat\u2028on a mat\x85at dusk"
    first = json.dumps({"similarity": 0.9, "level": 5, "quality": 97.0, "prompt": prompt}, ensure_ascii=False)
    path.write_text(first + "\nnot json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}:2: not JSON"):
        read_quality_samples(path)
    path.write_text(first + "\n", encoding="utf-8")
    assert read_quality_samples(path) == [QualitySample(0.9, 5, 97.0, prompt)]


@pytest.mark.parametrize(
    ("second_line", "says"),
    [
        ("not json", "not JSON"),
        ('{"similarity": 0.9, "quality": 97.0}', "not a sample"),
        ("[0.9, 5, 97.0]", "not a sample"),
        ('{"similarity": 0.9, "level": "five", "quality": 97.0}', "'five'"),
        # Python's json reads them; a NaN quality became an infinite one in the degradation matrix
        ('{"similarity": 0.9, "level": 5, "quality": NaN}', "nan is not a finite number"),
        ('{"similarity": Infinity, "level": 5, "quality": 97.0}', "inf is not a finite number"),
        # 1e300 overflowed train-predictor's standardising; int() read 5.5 as level 5 and took -5
        ('{"similarity": 1e300, "level": 5, "quality": 97.0}', "similarity 1e+300 is not a cosine similarity"),
        ('{"similarity": 0.9, "level": 5.5, "quality": 97.0}', "level 5.5 is not a whole number of steps"),
        ('{"similarity": 0.9, "level": -5, "quality": 97.0}', "level -5 is not a whole number of steps"),
        ('{"similarity": 0.9, "level": true, "quality": 97.0}', "level True is not a whole number of steps"),
        # an int past a float's range raised OverflowError: a traceback, where every other bad line is named
        ('{"similarity": 0.9, "level": 1' + "0" * 400 + ', "quality": 97.0}', "is not a whole number of steps"),
        ('{"similarity": 0.9, "level": 5, "quality": 1' + "0" * 400 + "}", "is not a finite number"),
        # split into words by the trained predictor: train-predictor failed with an AttributeError traceback
        ('{"similarity": 0.9, "level": 5, "quality": 97.0, "neighbour_prompt": 12}', "must be text"),
        ('{"similarity": 0.9, "level": 5, "quality": 97.0, "prompt": null}', "must be text"),
    ],
)
def test_a_sample_line_that_cannot_be_read_is_named_by_file_and_line(tmp_path, second_line, says):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({"similarity": 0.9, "level": 5, "quality": 97.0}) + "\n" + second_line + "\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}:2: .*{re.escape(says)}"):
        read_quality_samples(path)


def test_a_band_of_no_finite_quality_is_named(tmp_path):
    path = tmp_path / "bands.json"
    path.write_text('{"5": {"0.7-0.75": Infinity}}')
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: inf is not a finite number"):
        read_quality_samples(path)


def test_a_band_beyond_a_cosine_similarity_is_named(tmp_path):
    path = tmp_path / "bands.json"
    path.write_text(json.dumps({"25": {"0.95-1.5": 97.0}}))
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: similarity '1.5' is not a cosine similarity"):
        read_quality_samples(path)


def test_a_band_below_a_similarity_of_0_is_read(tmp_path):
    """Class 0's band reaches down to -1 (SimilarityTable.band(0)): its far neighbours measured as "-1-0.65" were
    refused as "could not convert string to float: ''", the minus sign taken for the one between the bounds."""
    path = tmp_path / "bands.json"
    path.write_text(json.dumps({"5": {"-1-0.65": 60.0, "-0.5--0.1": 50.0, "0.65-0.75": 97.0}}))
    assert read_quality_samples(path) == [
        QualitySample(pytest.approx(-0.175), 5, 60.0),
        QualitySample(pytest.approx(-0.3), 5, 50.0),
        QualitySample(pytest.approx(0.7), 5, 97.0),
    ]


@pytest.mark.parametrize("band", ["0.95", "0.9-0.95-1.0", "0.99-0.9", "-0.9", "0.1--0.2", "-", "0.5-"])
def test_a_band_that_is_not_lo_hi_is_named(tmp_path, band):
    # summed and halved, "0.95" was similarity 0.475 and "0.9-0.95-1.0" 1.425: another class, silently
    path = tmp_path / "bands.json"
    path.write_text(json.dumps({"25": {band: 97.0}}))
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: band '{re.escape(band)}' is not"):
        read_quality_samples(path)


def test_a_banded_file_without_its_table_is_named(tmp_path):
    path = tmp_path / "bands.json"
    path.write_text(json.dumps({"version": 1, "kind": "quality_profile", "provenance": "test"}))
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: not a table"):
        read_quality_samples(path)


def test_a_versioned_file_of_another_kind_is_named_as_such(tmp_path):
    """A latency profile given as the quality profile was 'not a table {level: {"lo-hi": quality}}'."""
    path = tmp_path / "latency.json"
    LatencyProfile.bundled("tiny_cpu").save(path)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: not a version 1 'quality_profile' file"):
        read_quality_samples(path)


def test_a_versioned_file_whose_write_fails_leaves_the_last_one_whole(tmp_path):
    """Written in place, a write cut short (here a value JSON cannot hold, half-way through) left half a file where
    the last good profile was."""
    path = tmp_path / "profile.json"
    write_versioned(path, "latency_profile", "the first", {"steps": 50})
    before = path.read_text()
    with pytest.raises(TypeError):
        write_versioned(path, "latency_profile", "the second", {"steps": 50, "bad": object()})
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["profile.json"]  # nothing half-written left beside it
