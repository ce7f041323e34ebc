"""The policies' small rules in process, at their edges: a level's share sampled (none for a share of 0, the top
level for what float rounding leaves), class 0's row when everything is picked away from 0, and argus's escalation
floor, which a class exactly at it may still move up to."""

import random

import pytest

from controller.policies import (
    ESCALATION_QUALITY_FLOOR,
    WindowInputs,
    make_policy,
    sample_level,
    where_class_0_runs,
)
from controller.predictor import SimilarityPredictor
from controller.profiles import DegradationMatrix, LatencyProfile, QualityModel
from controller.similarity import SimilarityTable

SIM = DegradationMatrix.from_quality_model(QualityModel(SimilarityTable.bundled("clip")))
# nine prompts in ten with no neighbour near enough: the hit class alone decides Proteus's averaged qualities
MOSTLY_MISSES = {0: 0.9, 25: 0.1}


class Drawn(random.Random):
    """A generator whose every draw is `u`."""

    def __init__(self, u: float):
        super().__init__()
        self.u = u

    def random(self) -> float:
        return self.u


def test_a_level_of_share_0_is_never_sampled_even_by_a_draw_of_0():
    assert sample_level({0: 0.0, 10: 1.0}, Drawn(0.0)) == 10


def test_a_draw_past_shares_that_rounding_left_under_1_gets_the_top_level():
    assert sample_level({0: 0.5, 10: 0.4999999}, Drawn(0.99999999)) == 10


def test_class_0_all_far_and_all_picked_above_0_has_no_share_at_0():
    assert where_class_0_runs({10: 1.0}, far_share=1.0) == {10: 1.0}


def test_argus_escalates_to_a_level_whose_quality_is_exactly_the_floor():
    table = SimilarityTable(((0.9, 10),))
    quality = {0: {0: 100.0, 10: 40.0}, 10: {0: 100.0, 10: ESCALATION_QUALITY_FLOOR}}
    matrix = DegradationMatrix(table, quality, "by hand")
    argus = make_policy("argus", LatencyProfile.bundled(), matrix, SimilarityPredictor(table))
    assert argus.fallback_levels(10, 0, (0, 10)) == (10,)


def test_proteus_serves_every_prompt_from_the_hit_classes_row_whatever_its_class():
    """Class 0's row holds its misses (at 0), not the one routing row: a prompt read at it ran at 0."""
    table = SimilarityTable.bundled("clip")
    proteus = make_policy("proteus", LatencyProfile.bundled(), SIM, SimilarityPredictor(table))
    plan = proteus.plan(WindowInputs(now=0.0, workers=8, current={}, demand_rps=2.0, k_mix=MOSTLY_MISSES, slo_s=15.0))
    assert plan.redirect[25] == {5: 1.0} and plan.redirect[0] == {0: 1.0}
    for k_star in (0, 25):
        assert proteus.choose_level(k_star, (5, 10, 15, 20, 25), plan, random.Random(0)) == 5


def test_a_policy_is_refused_a_profile_without_latencies_for_a_level_it_plans():
    """engine/control/setup.py refuses such a profile first; a policy made elsewhere (a simulation) is refused too."""
    profile = LatencyProfile("level 0 alone", 50, {0: (1.0,)}, "by hand")
    with pytest.raises(ValueError, match=r"no latencies for levels \[5, 10, 15, 20, 25\]"):
        make_policy("argus", profile, SIM, SimilarityPredictor(SimilarityTable.bundled("clip")))
