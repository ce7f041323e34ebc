"""The controller plans with the batches the workers run, and the dispatcher keeps the whole profile; a file the user
named that cannot be used stops the engine with one line naming it."""

import json
import logging
import re

import pytest

from controller.profile_latency import warn_if_unservable
from controller.profiles import LatencyProfile
from controller.similarity import SimilarityTable
from engine.cli import UsageError
from engine.config import CacheConfig, EngineConfig, LaunchConfig, PolicyConfig
from engine.control.setup import build_control


@pytest.mark.parametrize(("backend", "max_batch", "planned"), [("sim", 1, 1), ("sdxl", None, 4), ("sim", None, 8)])
def test_capacity_is_planned_on_the_largest_batch_the_workers_run(backend, max_batch, planned):
    setup = build_control(EngineConfig(launch=LaunchConfig(backend=backend, max_batch=max_batch)), now=0.0)
    assert setup.policy.profile.max_batch == setup.planned.max_batch == planned
    assert setup.profile.max_batch == 8  # the bundled profile, whole, for remote workers that batch more
    one_at_a_time = 1 / setup.profile.latency(25, 1)
    assert (setup.planned.capacity_rps(25, setup.slo_s) == pytest.approx(one_at_a_time)) == (planned == 1)


def _latency(**fields) -> str:
    """A latency profile file with `fields` changed (None: left out)."""
    data = {"version": 1, "kind": "latency_profile", "name": "x", "provenance": "test", "steps": 50}
    data |= {"batch_sizes": [1], "latency_s": {str(k): [1.0] for k in (0, 5, 10, 15, 20, 25)}} | fields
    return json.dumps({k: v for k, v in data.items() if v is not None})


def _predictor(**fields) -> str:
    """A trained predictor file with `fields` changed (None: left out)."""
    data = {"version": 1, "kind": "k_predictor", "provenance": "test", "features": ["similarity", "log_words"]}
    data |= {"mean": [0.8, 2.0], "scale": [0.1, 1.0], "weights": {"25": [0.0, 1.0, 0.0]}}
    data |= {"target": 95.0, "min_probability": 0.5} | fields
    return json.dumps({k: v for k, v in data.items() if v is not None})


def _sample(**fields) -> str:
    """A line of quality samples with `fields` changed."""
    return json.dumps({"similarity": 0.97, "level": 25, "quality": 96.0, "prompt": "a cat"} | fields) + "\n"


def _samples_of_every_class(**fields) -> str:
    """Quality samples of every (class, level) of the hash embedder's table, each with `fields` changed."""
    table = SimilarityTable.bundled("hash")
    bands = [table.band(k) for k in table.levels[1:]]
    return "".join(
        _sample(similarity=(low + high) / 2, level=level, **fields) for low, high in bands for level in table.levels[1:]
    )


@pytest.mark.parametrize(
    ("option", "content", "says"),
    [
        ("latency_profile", None, "No such file or directory"),
        ("latency_profile", '{"version": 1, "kind": "k_predictor"}', "not a version 1 'latency_profile' file"),
        ("latency_profile", _latency(batch_sizes=None), "no field 'batch_sizes'"),
        ("latency_profile", _latency(latency_s=[[1.0]]), "'list' object has no attribute 'items'"),
        ("latency_profile", _latency(latency_s={"x": [1.0]}), "invalid literal for int()"),
        ("latency_profile", _latency(latency_s={"60": [1.0]}), "level 60 outside 0..49"),
        ("latency_profile", _latency(latency_s={"0": [1.0]}), "no latencies for levels [5, 10, 15, 20, 25]"),
        ("latency_profile", _latency(time_scale=0), "time_scale must be a positive number, got 0.0"),
        ("latency_profile", _latency(batch_sizes=[1, 2]), "one latency per batch size [1, 2]"),
        # JSON's whole numbers have no bound, and float() of one past a float's range raised OverflowError: a traceback
        ("latency_profile", _latency(latency_s={str(k): [10**400] for k in range(0, 30, 5)}), "int too large"),
        ("predictor", _predictor(target=10**400), "int too large to convert to float"),
        ("predictor", "{", "Expecting property name"),
        ("predictor", _predictor(weights=None), "no field 'weights'"),
        # accepted, each would fail every request served from a neighbour
        ("predictor", _predictor(weights={"25": [0.0, 1.0]}), "needs a level > 0 and 3 finite weights"),
        ("predictor", _predictor(features=["similarity", "colour"]), "unknown features ['colour']"),
        ("predictor", _predictor(scale=[0.0, 1.0]), "scales finite and > 0"),
        # taken, it said 0 for every request: each ran in full
        ("predictor", _predictor(weights={}), "a predictor of levels [], none of which the engine serves"),
        ("predictor", _predictor(weights={"7": [0.0, 1.0, 0.0]}), "levels [7], none of which the engine serves"),
        ("predictor", _predictor(embedder=5), "embedder 5 is not an embedder's name"),
        # fit on CLIP's similarities, taken by an engine embedding with hash: levels chosen on another scale
        ("predictor", _predictor(embedder="clip"), "the clip embedder's similarities, not the hash embedder's"),
        # an empty file (a profile whose every exact image scored 0, a file truncated by hand) has no class to lack
        ("quality_profile", "\n", "holds no samples"),
        # read, but it lacks a class: the error names the file still
        ("quality_profile", '{"similarity": 0.97, "level": 25, "quality": 96.0}\n' * 2, "no measured quality"),
        # classed by the hash table's bands, CLIP's similarities put its samples in other classes
        ("quality_profile", _sample(embedder="clip") * 2, "the clip embedder's similarities, not the hash embedder's"),
        ("quality_profile", _sample(embedder="clip") + _sample(embedder="hash"), "samples of several embedders"),
        ("quality_profile", _sample(embedder=["hash"]), "embedder ['hash'] is not an embedder's name"),
        # level 10 of 20 steps reuses half of them, of the 50 the engine plans a fifth: its quality says nothing of it
        ("quality_profile", _sample(steps=20) * 2, "made with N=20 denoising steps, and the engine's levels are steps"),
        ("quality_profile", _sample(steps=50) + _sample(steps=30), "samples of several step counts (30, 50)"),
        ("quality_profile", _sample(steps=12.5), "steps 12.5 is not a number of denoising steps"),
        ("quality_profile", _sample(model=7), "model 7 is not a model's identity"),
        ("quality_profile", _sample(model="a") + _sample(model="b"), "samples of several models (a, b)"),
        ("latency_profile", _latency(model=""), "model '' is not a model's identity"),
        # two models of one embedder (two CLIP folders) differ in scale as two embedders do
        (
            "quality_profile",
            _samples_of_every_class(embedder="hash", embedder_identity="hash:0123456789abcdef"),
            "made from the similarities of the embedder model hash:0123456789abcdef, not of the engine's hash",
        ),
        (
            "predictor",
            _predictor(embedder="hash", embedder_identity="minilm:0123456789abcdef"),
            "made from the similarities of the embedder model minilm:0123456789abcdef, not of the engine's hash",
        ),
        ("quality_profile", _sample(embedder_identity=3), "embedder_identity 3 is not a model's identity"),
        ("predictor", _predictor(embedder_identity=3), "embedder_identity 3 is not a model's identity"),
        # taken, it was named in the engine's warnings as it was: a line break in it forged a line of the log
        ("predictor", _predictor(model="sdxl:0123\nERROR forged"), "model 'sdxl:0123\\nERROR forged' is not a model"),
        ("predictor", _predictor(embedder_identity=""), "embedder_identity '' is not a model's identity"),
    ],
)
def test_a_file_the_user_named_that_cannot_be_used_stops_the_engine_naming_it(tmp_path, option, content, says):
    path = tmp_path / "given.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=f"^{re.escape(str(path))}(:[0-9]+)?: .*{re.escape(says)}"):  # and its line
        build_control(EngineConfig(policy=PolicyConfig(**{option: str(path)})), now=0.0)


def test_without_a_prompt_cache_a_profile_of_level_0_alone_is_taken(tmp_path):
    """A --no-cache engine plans and serves level 0 alone; given a profile of level 0 (`argus profile latency
    --levels 0`), it refused to start: no latencies for levels [5, 10, 15, 20, 25], "which the engine serves from its
    cache"."""
    path = tmp_path / "exact.json"
    path.write_text(_latency(latency_s={"0": [2.0]}))
    cache = CacheConfig(enabled=False)
    setup = build_control(EngineConfig(cache=cache, policy=PolicyConfig(latency_profile=str(path))), now=0.0)
    assert setup.policy.levels == (0,)
    assert setup.slo_s == pytest.approx(6.0)  # three exact images by the profile given
    # with a cache, the levels it serves are still asked for
    with pytest.raises(UsageError, match=re.escape("no latencies for levels [5, 10, 15, 20, 25], which the engine")):
        build_control(EngineConfig(policy=PolicyConfig(latency_profile=str(path))), now=0.0)


@pytest.mark.parametrize(
    ("backend", "engine_scale", "planned_s"),
    [("sim", 1.0, 100.0), ("sim", 0.01, 1.0), ("sim", 0.02, 2.0), ("tiny", 1.0, 1.0)],
)
def test_a_profile_of_sim_workers_is_planned_at_the_engines_time_scale(tmp_path, backend, engine_scale, planned_s):
    """Measured on sim workers at --time-scale 0.01 and served by a sim engine at 1, it planned workers 100 times as
    fast as they ran: its SLO and capacities off by as much, without a word."""
    path = tmp_path / "sim.json"
    path.write_text(_latency(time_scale=0.01))
    launch = LaunchConfig(backend=backend, time_scale=engine_scale)
    setup = build_control(EngineConfig(launch=launch, policy=PolicyConfig(latency_profile=str(path))), now=0.0)
    assert setup.profile.latency(0, 1) == pytest.approx(planned_s)


@pytest.mark.parametrize("steps", [30, 50, 100])
def test_the_default_slo_is_three_exact_images_of_the_default_steps_whatever_steps_the_profile_has(tmp_path, steps):
    """A profile measured at --steps 30 made the default SLO three 30-step images, two of the 50 a request runs."""
    path = tmp_path / "latency.json"
    profile = LatencyProfile.from_model(
        "x",
        "test",
        fixed_s=0.6,
        step_s=0.09,
        batch_marginal=0.5,
        levels=(0, 5, 10, 15, 20, 25),
        steps=steps,
        max_batch=8,
    )
    profile.save(path)
    setup = build_control(EngineConfig(policy=PolicyConfig(latency_profile=str(path))), now=0.0)
    assert setup.slo_s == pytest.approx(3 * (0.6 + 0.09 * 50))


@pytest.mark.parametrize(("slo_s", "warned"), [(0.05, True), (0.113, True), (0.115, False), (None, False)])
def test_an_slo_no_level_can_plan_for_is_warned_of(caplog, slo_s, warned):
    """Sim workers at 0.02 make their fastest image (level 25) in 0.057 s: under an SLO of less than twice that, the
    plan counts no capacity anywhere, serves nothing and moves no worker. It started without a word."""
    caplog.set_level(logging.INFO, logger="argus.controller")
    launch = LaunchConfig(backend="sim", time_scale=0.02)
    build_control(EngineConfig(launch=launch, policy=PolicyConfig(slo_s=slo_s)), now=0.0)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == (
        [
            f"SLO {slo_s:.3f} s: no level makes an image within half of it (the fastest, level 25, takes 0.057 s"
            " alone), so the controller plans no capacity at any level and moves no worker for the load; give"
            " --slo-ms above 114"
        ]
        if warned
        else []
    )


def test_the_log_names_the_files_the_engine_plans_with_and_the_levels_a_predictor_lacks(tmp_path, caplog):
    """It named the latency profile only: whether a --predictor or --quality-profile was taken was not said."""
    path = tmp_path / "predictor.json"
    path.write_text(_predictor())
    caplog.set_level(logging.INFO, logger="argus.controller")
    build_control(EngineConfig(policy=PolicyConfig(predictor=str(path))), now=0.0)
    assert f"latency profile tiny_cpu (bundled), quality modelled, predictor {path}" in caplog.text
    assert f"{path}: a predictor of levels [25] never serves a request at levels [5, 10, 15, 20]" in caplog.text
    caplog.clear()
    build_control(EngineConfig(), now=0.0)
    assert "quality modelled, predictor the similarity table, similarity table bundled (hash)" in caplog.text


@pytest.mark.parametrize(("embedder", "identity"), [("hash", "hash"), ("hash", None), (None, None)])
def test_a_predictor_of_the_engines_embedder_or_of_none_named_is_taken(tmp_path, embedder, identity):
    """A predictor saved before the embedder (or its model) was kept says none: it is taken as it was."""
    path = tmp_path / "predictor.json"
    path.write_text(_predictor(embedder=embedder, embedder_identity=identity))
    setup = build_control(EngineConfig(policy=PolicyConfig(predictor=str(path))), now=0.0)
    assert setup.policy.predictor.embedder == embedder


@pytest.mark.parametrize("time_scale", [1.0, 0.3, 0.1, 0.02, 0.01, 0.005])
def test_the_default_slo_plans_level_0_alike_at_every_time_scale(time_scale):
    """Half the default SLO (three exact images) is what an exact batch of 2 takes: whether the batch counted was left
    to float rounding, and a sim engine at --time-scale 0.01 or 0.3 planned level 0 (and /ready's exact capacity) a
    third faster than one at 1 or 0.1. A batch that takes the whole of half the SLO leaves no time to wait in."""
    setup = build_control(EngineConfig(launch=LaunchConfig(backend="sim", time_scale=time_scale)), now=0.0)
    one_exact_image = setup.planned.latency(0, 1)
    assert setup.slo_s == pytest.approx(3 * one_exact_image)
    assert setup.planned.capacity_rps(0, setup.slo_s) * one_exact_image == pytest.approx(1.0)


@pytest.mark.parametrize("serves", ["sim:0123456789abcdef", "sim:fedcba9876543210", ""])
def test_profiles_measured_on_another_model_than_the_one_served_are_warned_of(tmp_path, caplog, serves):
    """A profile of one model planned another's capacities and levels without a word. Not refused: a fine-tune is
    another model that runs as fast. An engine that knows its model as it starts says so then; else, once its first
    worker names it (engine/server.py)."""
    latency, quality, predictor = tmp_path / "latency.json", tmp_path / "samples.jsonl", tmp_path / "predictor.json"
    latency.write_text(_latency(model="sim:0123456789abcdef"))
    quality.write_text(_samples_of_every_class(steps=50, model="sim:0123456789abcdef"))
    every_level = {str(k): [0.0, 1.0, 0.0] for k in (5, 10, 15, 20, 25)}
    predictor.write_text(_predictor(weights=every_level, model="sim:0123456789abcdef"))
    policy = PolicyConfig(latency_profile=str(latency), quality_profile=str(quality), predictor=str(predictor))
    caplog.set_level(logging.INFO, logger="argus.controller")
    setup = build_control(EngineConfig(policy=policy, model_id=serves), now=0.0)

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    if serves == "":
        assert warned() == []
        setup.warn_if_measured_elsewhere("sim:fedcba9876543210")
        serves = "sim:fedcba9876543210"
    if serves == "sim:0123456789abcdef":
        assert warned() == []
    else:
        assert warned() == [
            f"--{flag} {path} was measured on model sim:0123456789abcdef, and the engine serves {serves}: the"
            " controller plans with another model's figures (measure this one, or mind the difference)"
            for flag, path in (("latency-profile", latency), ("quality-profile", quality), ("predictor", predictor))
        ]


def test_the_log_tells_a_measured_latency_profile_from_the_bundled_one_of_its_name(tmp_path, caplog):
    """`argus profile latency --backend tiny` names its profile tiny_cpu, as the bundled one is: the start-up log said
    `latency profile tiny_cpu` with --latency-profile FILE and without it, whether the file was taken was not said."""
    path = tmp_path / "measured.json"
    path.write_text(_latency(name="tiny_cpu"))
    caplog.set_level(logging.INFO, logger="argus.controller")
    build_control(EngineConfig(policy=PolicyConfig(latency_profile=str(path))), now=0.0)
    assert f"latency profile tiny_cpu ({path}), quality modelled" in caplog.text
    caplog.clear()
    build_control(EngineConfig(), now=0.0)
    assert "latency profile tiny_cpu (bundled), quality modelled" in caplog.text


@pytest.mark.parametrize(("measured", "served_with"), [((0, 5, 10), "--levels 5,10"), ((0,), "--no-cache")])
def test_a_profile_of_some_levels_is_said_to_be_taken_with_them_and_is(tmp_path, caplog, measured, served_with):
    """`argus profile latency --levels 5,10` warned that argus serve 'needs every cache level, so it will not take
    it', where `serve --levels 5,10` takes it (and `--no-cache` one of level 0 alone)."""
    with caplog.at_level(logging.WARNING, logger="argus"):
        warn_if_unservable(list(measured), 50)
    assert f"argus serve --latency-profile takes it only with {served_with};" in caplog.text
    path = tmp_path / "some_levels.json"
    path.write_text(_latency(latency_s={str(k): [1.0] for k in measured}))
    cache = CacheConfig(levels=measured[1:]) if served_with.startswith("--levels") else CacheConfig(enabled=False)
    setup = build_control(EngineConfig(cache=cache, policy=PolicyConfig(latency_profile=str(path))), now=0.0)
    assert setup.policy.levels == measured
