"""A hello whose values the engine cannot take is refused, naming the field: before, one worker claiming sizes 0 to 0
(and then one claiming 8 to 8, within every bound) had every request refused, and one naming its device in megabytes
made /ready megabytes long."""

import uuid

import msgspec
import pytest
from waiting import wait_for

from controller.profiles import LatencyProfile
from engine_process import ask_worker_door, start_engine
from protocols.worker_messages import PROTOCOL_VERSION, Hello, Refused, Welcome
from workers.model_id import SIM_PROFILE, sim_model_id

SIM_MODEL = sim_model_id(LatencyProfile.bundled(SIM_PROFILE))

GOOD = Hello(PROTOCOL_VERSION, "w", "sim", SIM_MODEL, "sim", True, [5, 10, 15, 20, 25], 8, 50, 64, 2048, 1024, 0, 1)

BAD = [
    ({"protocol": PROTOCOL_VERSION + 1}, "protocol"),
    ({"worker_id": ""}, "worker_id"),
    ({"worker_id": " "}, "worker_id"),  # named nothing in the engine's lines and /ready
    ({"worker_id": "gpu-0 "}, "worker_id"),  # reads as "gpu-0", another worker
    ({"worker_id": "w\nERROR forged log line"}, "worker_id"),
    ({"worker_id": "a/b"}, "worker_id"),  # named "a/b/581a63fe": read as the id a
    ({"worker_id": "w" * 247}, "worker_id"),
    ({"backend": "x" * 5_000_000}, "backend"),
    ({"backend": "tiny"}, "backend"),  # another model than the engine serves (sim)
    ({"model": "sim:" + "0" * 5_000_000}, "model"),
    ({"model": "sim:0123456789abcdef"}, "model"),  # the same backend, another model than the engine serves
    ({"device": ""}, "device"),
    ({"max_batch": 0}, "max_batch"),
    ({"max_batch": 10**9}, "max_batch"),
    ({"default_steps": 0}, "default_steps"),
    ({"default_steps": 10**9}, "default_steps"),
    ({"min_size": 0, "max_size": 0, "default_size": 7}, "min_size"),
    ({"max_size": 10**9}, "max_size"),
    ({"min_size": 512, "default_size": 256}, "min_size"),
    # within bounds, but without the backend's default size (1024 for sim): beside the others, every size refused
    ({"min_size": 8, "default_size": 8, "max_size": 8}, "max_size"),
    ({"min_size": 2048, "default_size": 2048}, "min_size"),
    ({"levels": []}, "levels"),
    ({"levels": [10, 5]}, "levels"),
    ({"levels": [5, 5, 10]}, "levels"),
    ({"levels": [5, 7]}, "levels"),
    ({"levels": [5, 10], "default_steps": 8}, "levels"),
    ({"level": 999}, "level"),
    ({"level": -1}, "level"),
    ({"refused_steps": [103, 61]}, "refused_steps"),
    ({"refused_steps": [0]}, "refused_steps"),
    ({"refused_steps": [10**9]}, "refused_steps"),
    ({"refused_steps": [50]}, "refused_steps"),  # the default: every request naming no steps would be refused
    # NaN, never equal to itself, was a time scale not yet warned of at every hello: a warning line each
    ({"time_scale": float("nan")}, "time_scale"),
    ({"time_scale": -1.0}, "time_scale"),
    ({"time_scale": float("inf")}, "time_scale"),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("hello"), workers=0, backend="sim", wait=False)
    engine.wait_ready(0)
    yield engine
    assert engine.stop() == 0


def say_hello(engine, hello: Hello, identity: bytes) -> object:
    return ask_worker_door(engine.worker_address, hello, identity)


def hello_written_as(engine, fields: dict) -> object:
    """The engine's answer to a hello of these fields, encoded as they are: one this version's Hello cannot hold."""
    return ask_worker_door(engine.worker_address, msgspec.msgpack.encode(fields))


@pytest.mark.parametrize(("changes", "field"), BAD, ids=[f"{i}-{field}" for i, (_, field) in enumerate(BAD)])
def test_a_hello_out_of_bounds_is_refused_naming_the_field(engine, changes, field):
    hello = msgspec.structs.replace(GOOD, **changes)
    # an identity of its own, as each worker process draws (several cases name one field): the engine's ROUTER drops a
    # peer that connects under the identity of one it still holds, and the last case's socket may not have gone yet
    answer = say_hello(engine, hello, f"w/{field}/{uuid.uuid4().hex[:8]}".encode())
    assert isinstance(answer, Refused) and field in answer.reason, answer
    assert not engine.ready()["workers"]


def test_a_refusal_is_logged_once_for_its_reason_not_once_per_worker(engine):
    """A fleet of a thousand workers of another backend (one hello but for the ids), or a thousand workers started
    with one mistake, logged a line each."""
    hello = msgspec.structs.replace(GOOD, max_batch=999)
    for i in range(20):
        answer = say_hello(engine, msgspec.structs.replace(hello, worker_id=f"f-{i}"), f"f-{i}/{i:08x}".encode())
        assert isinstance(answer, Refused) and "max_batch 999" in answer.reason, answer
    lines = [line for line in engine.log().splitlines() if "max_batch 999" in line]
    assert len(lines) == 1 and "refusing worker f-0/00000000: max_batch 999" in lines[0], lines


def test_a_hello_within_bounds_is_welcomed(engine):
    assert isinstance(say_hello(engine, GOOD, b"w/good"), Welcome)
    (worker,) = engine.ready()["workers"]
    assert worker["name"] == "w/good"


def test_a_hello_of_another_version_that_does_not_decode_as_this_ones_is_refused_naming_both(engine):
    """Before, it was dropped as garbage: the worker, unanswered, warned that the engine was down or took not its
    CURVE key."""
    answer = hello_written_as(engine, {"type": "hello", "protocol": PROTOCOL_VERSION + 1, "name": "w"})
    assert answer == Refused(f"protocol {PROTOCOL_VERSION + 1} not supported (engine speaks {PROTOCOL_VERSION})")


def test_a_hello_of_this_version_that_does_not_decode_is_refused_saying_why(engine):
    """A hello of the engine's own protocol whose fields do not decode (a worker built by hand, or one that sends a
    field as another type) was dropped unheard: the worker, unanswered, warned that the engine was down or took not
    its CURVE key, and said hello again every second for ever."""
    answer = hello_written_as(engine, {"type": "hello", **msgspec.structs.asdict(GOOD), "max_batch": "8"})
    assert answer == Refused("hello did not decode: Expected `int`, got `str` - at `$.max_batch`")


def test_a_refused_peer_is_logged_by_its_identity_as_text_escaped_and_cut_short(engine):
    """It was logged as Python bytes (refusing worker b'vm-7688/cab35da6'); any peer sets its identity, up to 255
    bytes of anything: a newline in it would have forged a log line."""
    identity = b"\xffvm\n7688/" + b"x" * 200 + b"/cab35da6"
    # refused for a reason of its own: a refusal for the reason of another test's, within 10 s of it, is not logged
    answer = say_hello(engine, msgspec.structs.replace(GOOD, level=4242), identity)
    assert isinstance(answer, Refused)

    def said() -> list[str]:
        return [line for line in engine.log().splitlines() if "7688/" in line]

    # the engine's log is written by a thread of its own (engine/logs/thread.py): the line may come after the answer
    assert wait_for(said), engine.log()
    (line,) = said()
    # the byte that is not UTF-8 replaced, the newline escaped, the middle cut out and the process's digits kept
    assert "refusing worker \ufffdvm\\n7688/" + "x" * 47 + "..." + "x" * 11 + "/cab35da6: level 4242" in line, line
