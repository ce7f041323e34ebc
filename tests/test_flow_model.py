"""The flow model both solvers share (controller/flow_model.py): a level no worker can serve within the SLO, and a
plan of fixed routes."""

import pytest

from controller.allocation import allocate
from controller.flow_model import FlowProblem, SolverOptions, plan_from_rows, plan_from_solution
from controller.profiles import DegradationMatrix, LatencyProfile, QualityModel
from controller.similarity import SimilarityTable

LEVELS = (0, 5, 10, 15, 20, 25)
CAPACITY = {k: LatencyProfile.bundled().capacity_rps(k, 15.0) for k in LEVELS}
SIM = DegradationMatrix.from_quality_model(QualityModel(SimilarityTable.bundled("clip")))


def test_a_level_too_slow_for_the_slo_serves_nothing_and_the_others_serve_the_hits():
    """An SLO shorter than a full run: level 0 has no capacity (0 images/s), and the misses go unserved."""
    capacity = {**CAPACITY, 0: 0.0}
    demand = {0: 0.1, 15: 0.1, 25: 0.1}
    problem = FlowProblem.per_class(SIM, capacity, demand)
    solution = allocate(problem, 4, {}, SolverOptions())
    plan = plan_from_solution(problem, solution, "argus", 0.0)
    assert solution.status == "optimal"
    assert plan.served_rps == pytest.approx(0.2)


def test_a_plan_of_fixed_routes_took_no_solving():
    problem = FlowProblem.per_class(SIM, CAPACITY, {0: 0.1})
    plan = plan_from_rows(problem, {0: 1}, {k: {k: 1.0} for k in LEVELS}, "fixed", 0.0, "fixed")
    assert plan.solve_ms == 0.0


def test_at_light_load_the_plan_moves_workers_to_leave_headroom():
    """Everything is served as well from level 0 alone, but hits at their own faster levels leave capacity free for
    a burst: the headroom it wins outweighs the cost of moving the workers there."""
    demand = {0: 0.1, 5: 0.05, 10: 0.05, 15: 0.075, 20: 0.1, 25: 0.125}
    solution = allocate(FlowProblem.per_class(SIM, CAPACITY, demand), 8, {0: 8}, SolverOptions())
    assert solution.status == "optimal"
    assert solution.workers_per_level[0] < 8
