"""GET /plan's body (Plan.to_json), as the engine sends it: each field the plan's own, read back through JSON."""

import json
import math

from controller.plan import Plan

PLAN = Plan(
    policy="argus",
    workers_per_level={10: 1, 0: 2},
    redirect={10: {10: 0.75, 0: 0.25}, 0: {0: 1.0}},
    demand_rps={0: 1.0, 10: 2.0},
    served_rps=2.5,
    expected_quality=97.0,
    solve_ms=3.5,
    created_at=12.0,
    status="feasible",
    rerouted=True,
)


def sent(plan: Plan) -> dict:
    return json.loads(json.dumps(plan.to_json(), allow_nan=False))


def test_a_plans_json_says_each_of_its_fields_by_level_in_order():
    body = sent(PLAN)
    assert body == {
        "policy": "argus",
        "status": "feasible",
        "rerouted": True,
        "created_at": 12.0,
        "solve_ms": 3.5,
        "workers": 3,
        "workers_per_level": {"0": 2, "10": 1},
        "redirect": {"0": {"0": 1.0}, "10": {"0": 0.25, "10": 0.75}},
        "demand_rps": {"0": 1.0, "10": 2.0},
        "total_demand_rps": 3.0,
        "served_rps": 2.5,
        "unserved_share": 1 - 2.5 / 3.0,
        "expected_quality": 97.0,
    }
    # levels ascending, as an operator reads them
    assert list(body["workers_per_level"]) == ["0", "10"] and list(body["redirect"]["10"]) == ["0", "10"]


def test_a_plan_serving_nothing_has_no_quality_rather_than_nan():
    nothing = Plan("argus", {0: 0}, {0: {0: 1.0}}, {}, 0.0, math.nan, 0.0, 0.0, "optimal")
    assert sent(nothing)["expected_quality"] is None and sent(nothing)["rerouted"] is False
