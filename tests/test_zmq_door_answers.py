"""What the ZeroMQ door answers and counts for a message it refuses, decided in process with an engine stood
in (tests/engine_stand_in.py). With an engine: tests/test_zmq_front_door.py, tests/test_client_door_ids.py."""

import pytest
from engine_stand_in import StandInEngine, admitted, generate, replies, zmq_door_of

from protocols.client_messages import Error

# in process, each in milliseconds: a hang is a failure, not a wait for the suite's 300 s
pytestmark = pytest.mark.timeout(30)


async def test_a_second_generate_under_an_id_in_flight_is_refused_and_counted_refused():
    engine = StandInEngine()
    async with zmq_door_of(engine) as served:
        client = served.client(b"client-a")
        try:
            client.send_multipart(generate("g1"))
            await admitted(engine)
            client.send_multipart(generate("g1"))
            (reply,) = await replies(client, 1)
            assert isinstance(reply, Error) and (reply.request_id, reply.code) == ("", "invalid_request")
        finally:
            client.close()
    assert engine.metric("argus_requests_total", outcome="rejected", code="invalid_request") == 1
    assert len(engine.admitted) == 1
