"""The controller plans with the batches the workers run, and the dispatcher keeps the whole profile."""

import pytest

from engine.config import EngineConfig, LaunchConfig
from engine.control_setup import build_control


@pytest.mark.parametrize(("backend", "max_batch", "planned"), [("sim", 1, 1), ("sdxl", None, 4), ("sim", None, 8)])
def test_capacity_is_planned_on_the_largest_batch_the_workers_run(backend, max_batch, planned):
    setup = build_control(EngineConfig(launch=LaunchConfig(backend=backend, max_batch=max_batch)), now=0.0)
    assert setup.policy.profile.max_batch == setup.planned.max_batch == planned
    assert setup.profile.max_batch == 8  # the bundled profile, whole, for remote workers that batch more
    one_at_a_time = 1 / setup.profile.latency(25, 1)
    assert (setup.planned.capacity_rps(25, setup.slo_s) == pytest.approx(one_at_a_time)) == (planned == 1)
