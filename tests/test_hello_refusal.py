"""hello_refusal in process, at the edges of its bounds: test_hello_bounds sends a hello to an engine for each value
far out of bounds, and reads the field's name anywhere in the reason (a default_steps of 0 is refused naming
default_steps also in the levels' reason); here each bound's last value is taken, the next refused, and each refusal
begins with its own field."""

import msgspec
import pytest

from controller.profiles import LatencyProfile
from engine.fleet.hello_check import MAX_NAME_CHARS, hello_refusal, identity_refusal
from protocols.limits import MAX_BATCH, MAX_STEPS
from protocols.worker_messages import PROTOCOL_VERSION, Hello, Probe
from workers.model_id import SIM_PROFILE, sim_model_id
from workers.runtime import MAX_WORKER_ID_BYTES

SIM_MODEL = sim_model_id(LatencyProfile.bundled(SIM_PROFILE))

GOOD = Hello(PROTOCOL_VERSION, "w", "sim", SIM_MODEL, "sim", True, [5, 10, 15, 20, 25], 8, 50, 64, 2048, 1024, 0, 1)

TAKEN = [
    {"device": "d" * MAX_NAME_CHARS},
    {"max_batch": MAX_BATCH},
    {"default_steps": MAX_STEPS},
    {"default_steps": 26},  # one above the highest level
    {"level": 49},  # one below default_steps
    {"refused_steps": [1, MAX_STEPS]},
    {"time_scale": 0.0},  # a sim worker that takes no time
    {"worker_id": "w" * MAX_WORKER_ID_BYTES},
    {"min_size": 1024, "default_size": 1024, "max_size": 1024},  # the sim backend's default size alone
]

REFUSED = [
    ({"protocol": PROTOCOL_VERSION - 1}, "protocol"),  # an older worker, not only a newer one
    ({"device": "d" * (MAX_NAME_CHARS + 1)}, "device"),
    ({"device": "cuda:0\n"}, "device"),
    ({"max_batch": MAX_BATCH + 1}, "max_batch"),
    ({"default_steps": 0}, "default_steps"),
    ({"default_steps": MAX_STEPS + 1}, "default_steps"),
    ({"default_steps": 25}, "levels"),  # the highest level is no resume point for a run of 25 steps
    ({"level": 50}, "level"),
    ({"min_size": 0}, "min_size"),  # a multiple of 8, in order, but no size at all
    ({"default_size": 1028}, "min_size"),  # in order and within bounds, but no multiple of 8
    ({"refused_steps": [0]}, "refused_steps"),
    ({"refused_steps": [MAX_STEPS + 1]}, "refused_steps"),
    ({"refused_steps": [61, 61]}, "refused_steps"),
    ({"worker_id": "é" * (MAX_WORKER_ID_BYTES // 2 + 1)}, "worker_id"),  # within the limit in characters, not bytes
    ({"model": ""}, "model"),  # a Probe may name no model; a hello must
]


def refusal(changes: dict, model: str | None = SIM_MODEL) -> str | None:
    return hello_refusal(msgspec.structs.replace(GOOD, **changes), "sim", model, "the first worker's")


@pytest.mark.parametrize("changes", TAKEN, ids=lambda changes: ",".join(changes))
def test_a_hello_at_the_edge_of_its_bounds_is_taken(changes):
    assert refusal(changes) is None


@pytest.mark.parametrize(("changes", "field"), REFUSED, ids=[f"{i}-{field}" for i, (_, field) in enumerate(REFUSED)])
def test_a_hello_just_past_a_bound_is_refused_by_that_bounds_check(changes, field):
    assert (refusal(changes) or "").startswith(field + " "), refusal(changes)


def test_an_engine_with_no_model_yet_takes_any_one_named_in_printable_characters_and_a_probe_need_name_none():
    assert refusal({"model": "sim:0123456789abcdef"}, model=None) is None
    assert refusal({"model": "m" * MAX_NAME_CHARS}, model=None) is None
    for name in ("m" * (MAX_NAME_CHARS + 1), "sim:\n"):
        assert (refusal({"model": name}, model=None) or "").startswith("model must be"), name
    assert identity_refusal(Probe(PROTOCOL_VERSION, "w", "sim", "", 1), "sim", SIM_MODEL) is None
