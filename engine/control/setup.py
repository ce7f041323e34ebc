"""Builds the controller side of an engine from its configuration: profiles, predictor, policy, controller."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from controller.allocation import Allocator, allocate
from controller.policies import Policy, make_policy, planned_capacity_rps
from controller.predictor import SimilarityPredictor, TrainedPredictor
from controller.profiles import DegradationMatrix, LatencyProfile, QualityModel
from controller.quality_estimate import QualityEstimate
from controller.quality_samples import embedder_mismatch, embedder_model_mismatch
from controller.similarity import SimilarityTable
from controller.versioned import DATA_DIR
from controller.window import Controller, ControllerConfig
from engine.cache.embedders import embedder_identity
from engine.commands.arg_types import UsageError, read_user_file
from engine.config import EngineConfig
from workers.limits import BACKEND_MAX_BATCH, DEFAULT_STEPS

log = logging.getLogger("argus.controller")

# the latency profile each backend plans with when none is given
_DEFAULT_PROFILES = {"sim": "sdxl_a100", "sdxl": "sdxl_a100", "tiny": "tiny_cpu"}
# an SLO of this many exact (K=0) images, when none is given
_SLO_IN_EXACT_IMAGES = 3.0


@dataclass(frozen=True)
class ControlSetup:
    profile: LatencyProfile  # every batch size profiled: a remote worker may run larger ones
    # cut to the batches the configured workers run: their capacity is the largest batch that fits in the SLO,
    # so a batch they never run would overstate it
    planned: LatencyProfile
    policy: Policy
    controller: Controller
    slo_s: float
    # each image's expected quality, in its reply and /metrics: by what the plan counts on (the measured profile's
    # classes, else the model the modelled degradation averages)
    quality: QualityEstimate
    # (the flag and file, the model it was measured on) for each profile given that names its model
    measured_on: tuple[tuple[str, str], ...] = ()

    def warn_if_measured_elsewhere(self, model: str) -> None:
        """Logs each profile measured on another model than `model`, the one the engine serves (known once it
        starts, or named by its first worker). Not refused: a fine-tune of the profiled model is another model that
        runs as fast, and may degrade alike; but a profile of another model altogether plans capacities, or levels,
        that are not this one's, without a word."""
        for given, measured in self.measured_on:
            if measured != model:
                log.warning(
                    "%s was measured on model %s, and the engine serves %s: the controller plans with another"
                    " model's figures (measure this one, or mind the difference)",
                    given,
                    measured,
                    model,
                )


def build_control(config: EngineConfig, now: float, allocator: Allocator = allocate) -> ControlSetup:
    """`allocator` solves the allocation MILP (the engine's, in a process of its own). A file the user named
    (--latency-profile, --quality-profile, --predictor) that cannot be used stops the engine as it starts, with a
    UsageError naming it."""
    policy_config = config.policy
    embedder = config.cache.embedder
    given = config.cache.table_file
    # the table the engine chooses each request's level by (--similarity-table's, else the embedder's bundled one):
    # the predictor's, the quality classes' and the modelled quality's, which puts 95 at each of its thresholds, as a
    # calibrated table claims (the sim workers judge it by the bundled table: workers/main.py)
    whole = given.table if given else SimilarityTable.bundled(embedder)
    # the levels the cache keeps (--levels): the plan, the predictor and the quality classes know those alone
    table = whole.restricted(config.cache.levels)
    # without a prompt cache no prompt has a latent to resume from: level 0 alone can serve. Planned with the others,
    # Clipper-HT put every worker at 25 (which ran all its images at 0) and Proteus expected 99.8 of images at 5
    levels = table.levels if config.cache.enabled else (0,)
    profile = _latency_profile(config, levels)
    launch = config.launch
    planned = profile.limited_to(launch.max_batch or BACKEND_MAX_BATCH.get(launch.backend, BACKEND_MAX_BATCH["sdxl"]))
    model = QualityModel(whole)
    measured = None
    if policy_config.quality_profile:
        measured = read_user_file(
            lambda path: DegradationMatrix.load_profiled(path, table, embedder, DEFAULT_STEPS),
            policy_config.quality_profile,
        )
    degradation = measured or DegradationMatrix.from_quality_model(model, table=table)
    trained = None
    if policy_config.predictor:
        trained = read_user_file(TrainedPredictor.load, policy_config.predictor)
        if problem := embedder_mismatch(trained.embedder, embedder):
            raise UsageError(f"{policy_config.predictor}: {problem}")  # its levels would be chosen on another scale
        _check_predictor_levels(policy_config.predictor, trained, table.levels)
    predictor = trained or SimilarityPredictor(table)
    _check_embedder_models(
        config,
        (
            (policy_config.quality_profile, measured and measured.embedder_identity),
            (policy_config.predictor, trained and trained.embedder_identity),
        ),
    )
    policy = make_policy(policy_config.name, planned, degradation, predictor, allocator, levels)
    # exact images of the steps a request runs when it names none: a profile measured at other --steps times its own
    # N (one of 30 steps made the default SLO three 30-step images, two of the 50 a request runs)
    slo_s = policy_config.slo_s or _SLO_IN_EXACT_IMAGES * profile.at_any_steps.seconds(0, DEFAULT_STEPS, 1)
    window_s = policy_config.window_s
    # re-route no sooner than a fifth of a window (a compressed clock compresses this too)
    controller_config = ControllerConfig(slo_s=slo_s, window_s=window_s, min_observe_s=min(2.0, window_s / 5))
    controller = Controller(policy, controller_config, now)
    log.info(
        "policy %s, SLO %.2f s, latency profile %s (%s), quality %s, predictor %s, similarity table %s (%s)",
        policy.name,
        slo_s,
        planned.name,
        # the file too: `argus profile latency --backend tiny` names its profile tiny_cpu, as the bundled one is
        policy_config.latency_profile or "bundled",
        policy_config.quality_profile or "modelled",
        policy_config.predictor or "the similarity table",
        given.path if given else "bundled",
        embedder,
    )
    _warn_if_nothing_fits(planned, levels, slo_s)
    measured_on = (
        (f"--latency-profile {policy_config.latency_profile}", profile.model),
        (f"--quality-profile {policy_config.quality_profile}", measured and measured.model),
        (f"--predictor {policy_config.predictor}", trained and trained.model),
    )
    setup = ControlSetup(
        profile,
        planned,
        policy,
        controller,
        slo_s,
        QualityEstimate(model, measured),
        tuple((given, on) for given, on in measured_on if on),
    )
    if config.model_id:  # else named by the first worker (the engine calls this then)
        setup.warn_if_measured_elsewhere(config.model_id)
    return setup


def _warn_if_nothing_fits(planned: LatencyProfile, levels: tuple[int, ...], slo_s: float) -> None:
    """An SLO under which no level makes one image in half of it leaves the plan no capacity anywhere: it serves
    nothing and moves no worker, whatever the load. Taken without a word (--slo-ms 50 on workers whose fastest image
    takes 57 ms, an SLO given in the wrong unit), every plan said so only in a null quality and 0 served."""
    if any(planned_capacity_rps(planned, level, slo_s) for level in levels):
        return
    alone = {level: planned.at_any_steps.seconds(level, DEFAULT_STEPS, 1) for level in levels}
    fastest = min(levels, key=alone.__getitem__)
    log.warning(
        "SLO %.3f s: no level makes an image within half of it (the fastest, level %d, takes %.3f s alone), so the"
        " controller plans no capacity at any level and moves no worker for the load; give --slo-ms above %.0f",
        slo_s,
        fastest,
        alone[fastest],
        2000 * alone[fastest],
    )


def _check_embedder_models(config: EngineConfig, files: Iterable[tuple[str | None, str | None]]) -> None:
    """Files made from the similarities of an embedder model (`files`: each file and the model it names, None if it
    names none) other than the engine's are refused: two CLIP folders differ in scale as two embedders do, and their
    classes or levels would be chosen on another scale."""
    named = [(path, identity) for path, identity in files if identity is not None]
    if not named:
        return
    engine_identity = embedder_identity(config.cache.embedder, config.cache.embedder_path)
    for path, identity in named:
        if problem := embedder_model_mismatch(identity, engine_identity, "--embedder-path"):
            raise UsageError(f"{path}: {problem}")


def _check_predictor_levels(path: str, predictor: TrainedPredictor, levels: tuple[int, ...]) -> None:
    """A predictor that knows none of the levels the cache serves says 0 for every request: taken without a word, it
    ran every one in full (a predictor fit on samples of other levels, or of none)."""
    served = [k for k in levels if k > 0]
    trained = sorted(predictor.weights)
    if served and not set(trained) & set(served):
        raise UsageError(
            f"{path}: a predictor of levels {trained}, none of which the engine serves from its cache ({served}):"
            " it would run every request in full"
        )
    if missing := sorted(set(served) - set(trained)):
        log.warning("%s: a predictor of levels %s never serves a request at levels %s", path, trained, missing)


def _latency_profile(config: EngineConfig, levels: tuple[int, ...]) -> LatencyProfile:
    path = config.policy.latency_profile
    if path:
        profile = read_user_file(LatencyProfile.load, path)
        missing = sorted(set(levels) - set(profile.levels))
        # the policy plans every level the cache serves, and level 0 alone without one (--no-cache): a profile of
        # level 0 was refused there, said to lack levels the engine served from a cache it did not have
        if missing:
            raise UsageError(
                f"{path}: no latencies for levels {missing}, which the engine serves: measure them"
                f" (argus profile latency --steps above {max(levels)}, its --levels left out)"
            )
    else:
        name = _DEFAULT_PROFILES.get(config.launch.backend, "sdxl_a100")
        if not (DATA_DIR / f"{name}.json").exists():
            name = "sdxl_a100"
        profile = LatencyProfile.bundled(name)
    time_scale = config.launch.time_scale
    if config.launch.backend == "sim" and profile.time_scale != time_scale:
        # a profile of sim workers at one --time-scale (or of a real model, in real time) planned sim workers at
        # another as if they were as fast: SLO and capacities off by their ratio, without a word
        return profile.scaled(time_scale / profile.time_scale)
    return profile
