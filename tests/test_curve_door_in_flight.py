"""A client whose CURVE key was revoked while a request of its was in flight, sending again under that request's
id: its refusal came under the id, and then the request's own reply too, two replies under one id (a client matching
replies by id ended the request on the refusal)."""

import pytest
import zmq
from engine_stand_in import StandInEngine, admitted, generate, replies

from engine.zmq.curve_gate import CLIENTS, CurveGate
from engine.zmq.door import ClientDoor
from engine_process import free_port
from protocols.client_messages import Error, Images
from protocols.curve import ClientKeys, KeyPair, create_key_files, make_client

pytestmark = pytest.mark.timeout(30)


async def test_a_revoked_clients_refusal_under_the_id_of_its_request_in_flight_leaves_the_id_out(tmp_path):
    _, engine_secret = create_key_files(tmp_path / "keys", "engine")
    client_public, client_secret = create_key_files(tmp_path / "clients", "client")
    engine = StandInEngine()
    context = zmq.Context()
    gate = CurveGate(context, str(engine_secret), str(tmp_path / "clients"))
    gate.zap.start()  # before the door binds: it answers its handshakes
    address = f"tcp://127.0.0.1:{free_port()}"
    door = ClientDoor(engine, context, (address,), gate.server_keys, lambda key: gate.admits(CLIENTS, key))
    door.start()
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    make_client(client, ClientKeys(KeyPair.load(client_secret), gate.server_keys.public))
    client.connect(address)
    try:
        client.send_multipart(generate("g1"))
        request = await admitted(engine)
        client_public.unlink()
        gate.reload()
        client.send_multipart(generate("g1"))
        (refused,) = await replies(client, 1)
        assert isinstance(refused, Error) and refused.code == "unauthorized"
        assert refused.request_id == "" and refused.message.startswith("request_id 'g1' is in flight: ")
        request.future.set_result(Images("g1", []))
        (reply,) = await replies(client, 1)
        assert isinstance(reply, Images) and reply.request_id == "g1"
    finally:
        client.close()
        door.close()
        gate.zap.stop()
        context.term()
