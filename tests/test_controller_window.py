"""The demand estimator and the per-window controller, driven by a fake clock (no time passes)."""

import pytest

from controller.demand import DemandEstimate, DemandEstimator, WorkPerImage
from controller.policies import POLICY_NAMES, make_policy
from controller.predictor import SimilarityPredictor
from controller.profiles import DegradationMatrix, LatencyProfile, QualityModel
from controller.similarity import SimilarityTable
from controller.window import Controller, ControllerConfig, demand_shift

TABLE = SimilarityTable.bundled("clip")
SIM = DegradationMatrix.from_quality_model(QualityModel(TABLE))
PROFILE = LatencyProfile.bundled()


# -- demand ------------------------------------------------------------------------------
def test_ewma_with_headroom_and_the_last_windows_mix():
    demand = DemandEstimator(window_started=0.0, alpha=0.5, headroom=1.05)
    for _ in range(20):
        demand.observe(25)
    first = demand.close_window(10.0)  # 2 images/s, the first window sets the EWMA
    assert first.rps == pytest.approx(1.05 * 2.0)
    assert first.mix == {25: 1.0}
    for k in [0] * 10 + [10] * 30:
        demand.observe(k)
    second = demand.close_window(20.0)  # 4 images/s: EWMA 0.5 * 4 + 0.5 * 2
    assert second.rps == pytest.approx(1.05 * 3.0)
    assert second.mix == {0: 0.25, 10: 0.75}
    assert second.per_class() == pytest.approx({0: 1.05 * 0.75, 10: 1.05 * 2.25})
    quiet = demand.close_window(30.0)  # nothing arrived: the rate decays, the mix is kept
    assert quiet.rps == pytest.approx(1.05 * 1.5)
    assert quiet.mix == second.mix


def test_the_share_of_class_0_that_came_with_a_neighbour_is_kept_as_the_mix_is():
    demand = DemandEstimator(window_started=0.0)
    for neighbour in [True] * 6 + [False] * 2:
        demand.observe(0, neighbour=neighbour)
    demand.observe(15, neighbour=True)  # a hit: not class 0's
    assert demand.peek(5.0).far_share == pytest.approx(0.75)
    assert demand.close_window(10.0).far_share == pytest.approx(0.75)
    demand.observe(15, neighbour=True)
    assert demand.close_window(20.0).far_share == pytest.approx(0.75)  # no class 0 in the window: kept
    demand.observe(0, images=3)
    demand.observe(0, neighbour=True)
    assert demand.close_window(30.0).far_share == pytest.approx(0.25)  # by images, as the mix


def test_before_any_window_closes_the_plan_is_for_nothing_all_of_class_0_and_none_far():
    demand = DemandEstimator(window_started=0.0)
    assert demand.last() == DemandEstimate(0.0, {0: 1.0}, 0.0)
    demand.observe(15, neighbour=True)
    assert demand.close_window(10.0).far_share == 0.0  # no class 0 yet: the share before it is kept


def test_by_default_the_newest_window_weighs_half_and_five_percent_headroom_is_planned():
    demand = DemandEstimator(window_started=0.0)
    for _ in range(20):
        demand.observe(0)
    assert demand.close_window(10.0).rps == pytest.approx(1.05 * 2.0)
    assert demand.close_window(20.0).rps == pytest.approx(1.05 * 1.0)


def test_the_far_share_counts_class_0_arrivals_of_less_than_one_image():
    demand = DemandEstimator(window_started=0.0)
    demand.observe(0, images=0.5, neighbour=True)
    assert demand.close_window(10.0).far_share == 1.0


def test_the_first_window_with_arrivals_sets_the_ewma():
    demand = DemandEstimator(window_started=0.0, alpha=0.5, headroom=1.0)
    assert demand.close_window(0.05).rps == 0.0  # the engine's first look, before any request
    assert demand.close_window(10.05).rps == 0.0
    demand.observe(15, images=20)
    assert demand.peek(12.05).rps == pytest.approx(10.0)
    assert demand.close_window(20.05).rps == pytest.approx(2.0)  # not half of it, averaged with the quiet start
    assert demand.close_window(30.05).rps == pytest.approx(1.0)  # quiet after arrivals: the EWMA decays


def test_fast_attack_plans_for_a_rise_at_once_and_lets_a_fall_decay():
    demand = DemandEstimator(window_started=0.0, alpha=0.5, headroom=1.0, fast_attack=True)
    demand.observe(5, images=10)
    assert demand.close_window(10.0).rps == pytest.approx(1.0)
    for _ in range(12):
        demand.observe(5)
    assert demand.peek(13.0).rps == pytest.approx(4.0)  # a burst 3 s into the window: its own rate, not 2.5
    assert demand.close_window(15.0).rps == pytest.approx(2.4)  # 12 in 5 s; the EWMA would say 1.7
    assert demand.close_window(25.0).rps == pytest.approx(0.85)  # quiet: the EWMA's decay, half of 1.7
    plain = DemandEstimator(window_started=0.0, alpha=0.5, headroom=1.0)
    plain.observe(5, images=10)
    plain.close_window(10.0)
    plain.observe(5, images=12)
    assert plain.peek(13.0).rps == pytest.approx(2.5)


def test_fast_attack_takes_one_request_of_many_images_for_one_arrival():
    demand = DemandEstimator(window_started=0.0, alpha=0.5, headroom=1.0, fast_attack=True)
    demand.observe(5, images=10)
    demand.close_window(10.0)
    demand.observe(5, images=12)  # as likely at 1 image/s as one lone image is: not a burst
    assert demand.peek(13.0).rps == pytest.approx(2.5)  # the EWMA, not 12 images in 3 s


def test_peek_does_not_close_the_window():
    demand = DemandEstimator(window_started=0.0, alpha=1.0, headroom=1.0)
    demand.observe(5, images=4)
    assert demand.peek(2.0).rps == pytest.approx(2.0)
    assert demand.peek(4.0).rps == pytest.approx(1.0)
    assert demand.close_window(4.0).rps == pytest.approx(1.0)
    assert demand.window_started == 4.0


def test_demand_shift():
    assert demand_shift({5: 1.0}, {5: 1.0}) == 0.0
    assert demand_shift({5: 1.0, 25: 1.0}, {5: 2.0}) == pytest.approx(1.0)
    assert demand_shift({}, {}) == 0.0
    assert demand_shift({5: 1.0}, {}) == float("inf")


def test_a_demand_shift_under_one_image_a_second_is_its_share_of_the_plan():
    """At a trickle (a plan for half an image a second) a shift is still a share of what was planned: counted as
    infinite whenever anything moved, the controller re-routed at every look however little demand moved."""
    assert demand_shift({5: 0.55}, {5: 0.5}) == pytest.approx(0.1)


def test_an_image_counts_as_the_worker_time_its_steps_take_at_its_level():
    work = WorkPerImage(PROFILE)  # sdxl_a100: 0.6 s + 0.09 s per step run, at N = 50
    assert work(0, 50) == work(25, 50) == 1.0
    assert work(0, 150) == pytest.approx((0.6 + 0.09 * 150) / 5.1)  # 2.76: the fixed part does not scale
    assert work(25, 150) == pytest.approx((0.6 + 0.09 * 125) / 2.85)  # 4.16: 125 steps run where 25 are
    assert work(0, 20) == pytest.approx((0.6 + 0.09 * 20) / 5.1)  # 0.47
    assert work(5, 30) == pytest.approx((0.6 + 0.09 * 25) / (0.6 + 0.09 * 45))
    # an image of N steps that resumes below its level's step runs more than that level's images
    assert work(25, 50, start=10) == pytest.approx((0.6 + 0.09 * 40) / 2.85)


def test_an_image_of_few_steps_still_counts_on_a_profile_whose_fit_crosses_zero():
    """tiny_cpu's batch-1 line crosses 0 s at 4.4 steps run: a tiny engine offered 2 images/s of 4 steps (161 ms of a
    worker each, against 1.38 s for 50) planned for 0.000 images/s."""
    work = WorkPerImage(LatencyProfile.bundled("tiny_cpu"))
    assert 0.05 < work(0, 4) < 0.2
    assert 0 < work(0, 1) < work(0, 2) < work(0, 4)


# -- the controller ----------------------------------------------------------------------
class Counting:
    """A real policy that counts how it was asked to plan."""

    def __init__(self, name: str = "argus"):
        self.inner = make_policy(name, PROFILE, SIM, SimilarityPredictor(TABLE))
        self.name = name
        self.profile = self.inner.profile
        self.plans_for_bursts = self.inner.plans_for_bursts
        self.reroutes_between_windows = self.inner.reroutes_between_windows
        self.full = 0
        self.reroutes = 0

    def plan(self, inputs):
        self.full += 1
        return self.inner.plan(inputs)

    def reroute(self, inputs, workers_per_level):
        self.reroutes += 1
        return self.inner.reroute(inputs, workers_per_level)


def arrive(controller: Controller, k_star: int, n: int) -> None:
    for _ in range(n):
        controller.observe_arrival(k_star)


def arrive_steadily(controller: Controller, k_star: int, per_second: int, seconds: range, workers: int) -> None:
    """`per_second` arrivals of class `k_star` in each second of `seconds`, the controller looking at each second's
    end with `workers` alive."""
    for t in seconds:
        arrive(controller, k_star, per_second)
        controller.maybe_replan(float(t), workers)


def test_full_plans_on_schedule():
    policy = Counting()
    controller = Controller(policy, ControllerConfig(window_s=10.0, min_observe_s=2.0), now=0.0)
    first = controller.maybe_replan(0.0, 8)
    assert first is not None and controller.plan is first and first.workers == 8
    new_plans = {}
    for t in range(1, 31):
        arrive(controller, 25, 3)  # steady: 3 images/s, all class 25
        new_plans[t] = controller.maybe_replan(float(t), 8)
    made = [t for t, plan in new_plans.items() if plan is not None]
    # full plans every 10 s; one re-route at 2 s, when the first plan (made before any demand) is seen to be off
    assert made == [2, 10, 20, 30]
    assert policy.full == 4 and policy.reroutes == 1
    assert new_plans[2].workers_per_level == first.workers_per_level
    for t in (10, 20, 30):
        assert new_plans[t].created_at == t
        assert new_plans[t].total_demand_rps == pytest.approx(1.05 * 3.0)
    assert controller.plan is new_plans[30]


def test_a_demand_shift_mid_window_reroutes_without_moving_workers():
    policy = Counting()
    config = ControllerConfig(window_s=10.0, shift_threshold=0.25, min_observe_s=2.0)
    controller = Controller(policy, config, now=0.0)
    controller.maybe_replan(0.0, 8)
    arrive_steadily(controller, 25, 2, range(1, 11), 8)
    planned = controller.plan
    assert planned.created_at == 10.0 and policy.full == 2
    reroutes = policy.reroutes
    arrive(controller, 20, 12)  # 6 images/s of class 20 in the first 2 s of the window
    assert controller.maybe_replan(11.0, 8) is None  # the window is too young to judge
    shifted = controller.maybe_replan(12.0, 8)
    assert shifted is not None and policy.reroutes == reroutes + 1 and policy.full == 2
    assert shifted.workers_per_level == planned.workers_per_level
    assert shifted.demand_rps[20] > 0 and planned.demand_rps[20] == 0
    assert controller.maybe_replan(13.0, 8) is None  # no second solve within min_observe_s


@pytest.mark.parametrize("name", ["proteus", "clipper-ha", "clipper-ht", "nirvana"])
def test_a_baseline_keeps_its_routes_until_the_next_window(name):
    """Re-deriving the routes from the demand seen within a window is argus's route planner: Proteus re-solves every
    window and keeps its last solve's routing fractions in between (as published), and it got argus's LP as well."""
    policy = Counting(name)
    assert not policy.reroutes_between_windows
    controller = Controller(policy, ControllerConfig(window_s=10.0, shift_threshold=0.25, min_observe_s=2.0), now=0.0)
    controller.maybe_replan(0.0, 8)
    arrive_steadily(controller, 25, 2, range(1, 11), 8)
    planned = controller.plan
    arrive(controller, 20, 12)  # what has argus re-route 2 s into the window
    assert [controller.maybe_replan(float(t), 8) for t in range(11, 20)] == [None] * 9
    assert policy.reroutes == 0 and controller.plan is planned
    assert controller.maybe_replan(20.0, 8).demand_rps[20] > 0  # the next window's full plan


def test_argus_alone_reroutes_between_windows():
    assert {name: Counting(name).reroutes_between_windows for name in POLICY_NAMES} == {
        name: name == "argus" for name in POLICY_NAMES
    }


def test_a_change_in_workers_replans_at_once():
    policy = Counting()
    controller = Controller(policy, ControllerConfig(), now=0.0)
    controller.maybe_replan(0.0, 8)
    arrive(controller, 10, 5)
    plan = controller.maybe_replan(3.0, 7)
    assert plan is not None and plan.workers == 7 and policy.full == 2


def test_a_worker_replaced_within_a_second_leaves_the_demand_estimate_as_it_was():
    policy = Counting()
    controller = Controller(policy, ControllerConfig(), now=0.0)
    arrive_steadily(controller, 15, 2, range(0, 21), 4)
    assert controller.plan.total_demand_rps == pytest.approx(1.05 * 2.0)
    arrive(controller, 15, 2)
    # one dies and its replacement joins 0.3 s later, no arrival in between: not a 0.3 s window of no demand
    lost = controller.maybe_replan(21.0, 3)
    replaced = controller.maybe_replan(21.3, 4)
    assert policy.full == 5
    assert lost.total_demand_rps == pytest.approx(1.05 * 2.0)
    assert replaced.total_demand_rps == pytest.approx(1.05 * 2.0)
    arrive_steadily(controller, 15, 2, range(22, 31), 4)
    # the window went on: it closes on schedule, as long as every other
    assert controller.plan.created_at == 30.0
    assert controller.plan.total_demand_rps == pytest.approx(1.05 * 2.0)


def test_a_worker_lost_just_after_a_burst_keeps_the_burst_planned_for():
    controller = Controller(Counting(), ControllerConfig(), now=0.0)
    for t in range(0, 21):
        arrive(controller, 15, 1 if t <= 10 else 4)  # 1 image/s, then a burst of 4
        controller.maybe_replan(float(t), 8)
    burst = controller.plan
    assert burst.created_at == 20.0 and burst.total_demand_rps == pytest.approx(1.05 * 4.0)  # fast attack
    # half a second into the next window: too young to tell, so the last window's estimate, not its EWMA (2.5,
    # which moved the workers to slower levels, serving 2.6 images/s of the 4.9 that kept coming)
    lost = controller.maybe_replan(20.5, 7)
    assert lost.total_demand_rps == pytest.approx(burst.total_demand_rps)
    assert lost.served_rps > 1.05 * 2.5 * 1.4  # seven workers serve most of it from faster levels


def test_a_worker_change_late_in_a_window_plans_on_the_window_so_far():
    controller = Controller(Counting(), ControllerConfig(), now=0.0)
    arrive_steadily(controller, 15, 2, range(0, 11), 4)
    arrive(controller, 15, 30)  # 30 images/s for 3 s
    arrive(controller, 15, 30)
    arrive(controller, 15, 30)
    changed = controller.maybe_replan(13.0, 3)
    assert changed.total_demand_rps == pytest.approx(1.05 * 30.0)  # argus plans for a rise at once


@pytest.mark.parametrize("name", ["clipper-ha", "nirvana", "proteus"])
def test_the_controller_drives_every_policy(name):
    controller = Controller(Counting(name), ControllerConfig(), now=0.0)
    arrive_steadily(controller, 15, 2, range(0, 31), 4)
    assert controller.plan.policy == name and controller.plan.created_at == 30.0


def test_clipper_ht_plans_its_far_neighbours_at_the_largest_level():
    """The engine tells the controller which class-0 arrivals came with a neighbour's latent: Clipper-HT serves those
    at 25, and its plan now says so (and what they lose there)."""
    controller = Controller(
        make_policy("clipper-ht", PROFILE, SIM, SimilarityPredictor(TABLE)), ControllerConfig(), 0.0
    )
    for i in range(10):
        controller.observe_arrival(0, level=25 if i < 9 else 0, neighbour=i < 9)
    plan = controller.maybe_replan(10.0, 4)
    assert plan.redirect[0] == pytest.approx({0: 0.1, 25: 0.9})
    assert plan.expected_quality == pytest.approx(0.1 * 100.0 + 0.9 * SIM.quality(25, 0))


@pytest.mark.parametrize("field", ["window_s", "slo_s"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_a_window_or_slo_that_is_not_positive_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        ControllerConfig(**{field: value})


def test_requests_of_more_steps_are_planned_for_as_the_work_they_are():
    """Each image was counted as one whatever its steps: 1 image/s of class 15 at 150 steps (3.4 images/s of the
    profile's 50 at level 15) got the plan of 1 image/s at 50 steps, five of 8 workers at level 0 where such an
    image takes 14.1 s of a 15 s SLO, the controller seeing capacity to spare."""
    plans = {}
    for steps in (50, 150):
        controller = Controller(Counting(), ControllerConfig(), now=0.0)
        for t in range(0, 21):
            controller.observe_arrival(15, 1, level=15, steps=steps)
            controller.maybe_replan(float(t), 8)
        plans[steps] = controller.plan
    usual, long = plans[50], plans[150]
    assert usual.total_demand_rps == pytest.approx(1.05)
    assert usual.workers_per_level[0] > 0 and usual.expected_quality > 99.9  # room to serve below its level
    assert long.total_demand_rps == pytest.approx(1.05 * (0.6 + 0.09 * 135) / (0.6 + 0.09 * 35))
    assert long.served_rps == pytest.approx(long.total_demand_rps)  # all of it, at levels that can
    assert long.workers_per_level[0] == 0 and set(long.redirect[15]) & {0, 5, 10} == set()
    assert long.expected_quality < usual.expected_quality


@pytest.mark.parametrize("steps", [30, 100])
def test_workers_profiled_at_other_steps_are_planned_as_when_profiled_at_the_default_steps(steps):
    """Demand was counted in images of the profile's N at the level each ran, which at 30 steps weighs a 50-step
    image 1.5 at level 0 and 2.7 at 25: a class moved to another level took the wrong share of its capacity. 8 workers
    profiled at 30 steps were planned to serve all of 3.15 images/s where their allocation serves 2.88 (profiled at
    50: all of it, another allocation)."""
    line = {"fixed_s": 0.6, "step_s": 0.09, "batch_marginal": 0.5, "levels": (0, 5, 10, 15, 20, 25), "max_batch": 8}
    plans = {}
    for n in (50, steps):
        profile = LatencyProfile.from_model(f"sdxl_a100 at {n} steps", "test", steps=n, **line)
        controller = Controller(make_policy("argus", profile, SIM, SimilarityPredictor(TABLE)), ControllerConfig(), 0)
        controller.maybe_replan(0.0, 8)
        for k_star, count in {0: 4, 5: 6, 10: 6, 15: 3, 20: 5, 25: 6}.items():
            for _ in range(count):
                controller.observe_arrival(k_star, 1, k_star, 50, k_star)
        plans[n] = controller.maybe_replan(10.0, 8)
    assert plans[steps].workers_per_level == plans[50].workers_per_level
    assert plans[steps].served_rps == pytest.approx(plans[50].served_rps)
    assert plans[steps].total_demand_rps == pytest.approx(plans[50].total_demand_rps)


def test_a_pace_plans_anew_at_once_on_the_profile_scaled_by_it():
    # the workers take twice the profile's times: the same demand is planned on faster levels, at once (mid-window)
    policy = make_policy("argus", PROFILE, SIM, SimilarityPredictor(TABLE))
    controller = Controller(policy, ControllerConfig(slo_s=40.0, window_s=10.0), now=0.0)
    controller.maybe_replan(0.0, 8)
    for t in range(1, 11):
        for k_star in (0, 10, 25):
            controller.observe_arrival(k_star)
        controller.maybe_replan(float(t), 8)
    as_profiled = controller.plan
    assert controller.maybe_replan(11.0, 8) is None  # nothing due: the window is a second old
    controller.plan_at_pace(2.0)
    paced = controller.maybe_replan(11.0, 8)
    assert paced is not None and paced.created_at == 11.0
    assert policy.profile.latency(0, 1) == pytest.approx(2 * PROFILE.latency(0, 1))
    assert paced.workers_per_level[0] < as_profiled.workers_per_level[0]
    controller.plan_at_pace(1.0)
    assert controller.maybe_replan(11.5, 8) is not None
    assert policy.profile is PROFILE


def test_a_pace_whose_plan_failed_is_planned_at_the_next_look():
    # the full plan a pace asks for fails (the MILP process died during it): it is still due at the next look, not
    # only at the next window, which may be minutes away
    policy = make_policy("argus", PROFILE, SIM, SimilarityPredictor(TABLE))
    solve = policy.allocator
    controller = Controller(policy, ControllerConfig(slo_s=40.0, window_s=600.0), now=0.0)
    controller.maybe_replan(0.0, 8)
    as_profiled = controller.plan

    def died(*args):
        raise RuntimeError("the MILP process ended")

    policy.allocator = died
    controller.plan_at_pace(2.0)
    with pytest.raises(RuntimeError):
        controller.maybe_replan(1.0, 8)
    policy.allocator = solve
    paced = controller.maybe_replan(2.0, 8)
    assert paced is not None and not paced.rerouted and paced is not as_profiled


def test_a_window_whose_plan_failed_is_planned_at_the_next_look():
    """The full plan a window closes for fails (the MILP process stalled or died during it): the allocation it was to
    make is still due at the next look. Left to the next window, misses that had turned into three times as many hits
    were served for another whole window by workers all at level 0, where the window before had put them: only their
    routes moved."""
    policy = make_policy("argus", PROFILE, SIM, SimilarityPredictor(TABLE))
    solve = policy.allocator
    controller = Controller(policy, ControllerConfig(window_s=10.0), now=0.0)
    for t in range(0, 20):
        controller.maybe_replan(float(t), 8)
        arrive(controller, 0 if t < 10 else 25, 1 if t < 10 else 3)
    before = controller.plan

    def died(*args):
        raise RuntimeError("the MILP process ended")

    policy.allocator = died
    with pytest.raises(RuntimeError):
        controller.maybe_replan(20.0, 8)  # the window closes on 3 images/s of class 25
    policy.allocator = solve
    retried = controller.maybe_replan(20.1, 8)
    assert retried is not None and not retried.rerouted and retried.created_at == 20.1
    assert retried.total_demand_rps == pytest.approx(1.05 * 3.0)  # what the window closed on (fast attack)
    # every worker was at 0 for the misses; re-routed alone, they served the 3 images/s from there, at its capacity
    assert before.workers_per_level[0] == 8 and retried.workers_per_level[0] < 8
    assert controller.maybe_replan(20.2, 8) is None  # made once, not at every look


def test_a_window_or_slo_under_a_second_is_taken():
    config = ControllerConfig(window_s=0.5, slo_s=0.5)
    assert (config.window_s, config.slo_s) == (0.5, 0.5)


def test_a_worker_change_once_the_window_has_run_min_observe_s_plans_on_the_window_so_far():
    """`min_observe_s` into the window is old enough to tell: the window's own demand, not the last window's."""
    controller = Controller(Counting(), ControllerConfig(window_s=10.0, min_observe_s=2.0), now=0.0)
    arrive_steadily(controller, 15, 2, range(0, 21), 4)
    assert controller.plan.total_demand_rps == pytest.approx(1.05 * 2.0)
    arrive(controller, 15, 30)  # 15 images/s over the window's first 2 s
    changed = controller.maybe_replan(22.0, 3)
    assert changed.total_demand_rps == pytest.approx(1.05 * 15.0)


def test_by_default_a_small_drift_in_demand_mid_window_is_not_rerouted():
    policy = Counting()
    controller = Controller(policy, ControllerConfig(), now=0.0)
    arrive_steadily(controller, 25, 10, range(0, 11), 8)
    reroutes = policy.reroutes
    arrive(controller, 25, 21)  # 10.5 images/s against the 10 planned for: 5% more
    assert controller.maybe_replan(12.0, 8) is None
    assert policy.reroutes == reroutes


def test_an_arrival_told_only_its_class_and_steps_is_a_miss_run_in_full_at_level_0():
    """The engine says how each arrival is served; one said without it counts as served from scratch at level 0,
    with no neighbour's latent."""
    controller = Controller(
        make_policy("clipper-ht", PROFILE, SIM, SimilarityPredictor(TABLE)), ControllerConfig(), 0.0
    )
    for _ in range(10):
        controller.observe_arrival(0, steps=150)
    plan = controller.maybe_replan(10.0, 8)
    assert plan.redirect[0] == {0: 1.0}  # no far neighbours: none sent to level 25
    assert plan.total_demand_rps == pytest.approx(1.05 * (0.6 + 0.09 * 150) / 5.1)
