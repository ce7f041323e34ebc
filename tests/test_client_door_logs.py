"""The client door's log lines that a client can have written at will come at most once a minute, each saying what
those held back since the last told of: before, a line an hour into a storm of lost requests read as one client's
few, the rest unseen in the log."""

import types

import pytest
import zmq
from engine_stand_in import replies

from engine.logs import quiet_lines
from engine.metrics import EngineMetrics
from engine.zmq.door import ClientDoor
from engine_process import free_port, raw_client
from protocols.client_messages import Inquire, client_side_codec


@pytest.fixture
async def door(monkeypatch):
    """A client door of an engine that holds nothing, on a clock of its own (`now`): the loop's own must run on."""
    now = [0.0]
    monkeypatch.setattr(quiet_lines, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    config = types.SimpleNamespace(
        client_gone_grace_s=10.0, client_max_connections=16, dispatch=types.SimpleNamespace(max_queue=16)
    )
    engine = types.SimpleNamespace(config=config, metrics=EngineMetrics())
    context = zmq.Context()
    address = f"tcp://127.0.0.1:{free_port()}"
    opened = ClientDoor(engine, context, (address,))
    opened.start()
    yield types.SimpleNamespace(context=context, address=address, now=now)
    opened.close()
    context.term()


@pytest.mark.timeout(60)
async def test_a_lost_request_line_says_how_many_were_answered_so_since_the_last(door, caplog):
    now = door.now
    client = raw_client(door.context, door.address)
    codec = client_side_codec()
    try:
        caplog.set_level("INFO", logger="argus.clients")
        for at, ids in ((0.0, ["a"]), (1.0, ["b", "c"]), (2.0, ["d"]), (61.0, ["e"])):
            now[0] = at
            client.send_multipart(codec.encode(Inquire(ids)))
            answers = await replies(client, len(ids))
            assert [(a.request_id, a.code) for a in answers] == [(i, "request_lost") for i in ids]
    finally:
        client.close()
    lines = [r.getMessage() for r in caplog.records if "answered request_lost" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "since the last" not in lines[0]
    # b, c and d: their line was held back
    assert lines[1].endswith("answered request_lost; 3 more answered so since the last such line (any client)")


@pytest.mark.timeout(60)
async def test_a_client_is_named_in_the_log_by_nothing_it_could_be_reached_by(door, caplog):
    """libzmq names a client that gives no identity of its own by 5 bytes, and the log showed 6: the whole name, which
    a peer connecting under it takes over (ROUTER_HANDOVER), with the client's replies (through an engine, the 10
    images of a request in flight)."""
    now = door.now
    names = [b"\x00\x8f\x02\x11\xe3", b"\x00\x8f\x02\x11\xe4"]  # two clients libzmq named one after the other
    clients = [raw_client(door.context, door.address, name) for name in names]
    codec = client_side_codec()
    try:
        caplog.set_level("INFO", logger="argus.clients")
        for client in clients:
            client.send_multipart(codec.encode(Inquire(["a"])))
            await replies(client, 1)
            now[0] += 61.0  # the next client's line is not held back
    finally:
        for client in clients:
            client.close()
    lines = [r.getMessage() for r in caplog.records if "answered request_lost" in r.getMessage()]
    assert len(lines) == 2, lines
    assert not any(name[1:].hex() in line for line in lines for name in names), lines
    assert lines[0].split()[1] != lines[1].split()[1]  # told apart all the same
