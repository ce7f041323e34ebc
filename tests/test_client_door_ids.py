"""A request in flight over ZeroMQ gets one reply under its id, whatever else its client sends under that id.

A second Generate under the id, a Cancel or a Generate that fails strict decoding naming it: each is answered
invalid_request at once, and the answer came under the live request's id, so a client matching replies by id
(as a raw client does) read it as the request's end, and then got the request's images too.
"""

import msgspec
import pytest
import zmq
from pictures import image_as_asked
from test_worker_latents import engine_with_a_raw_worker

from engine_process import raw_client
from protocols.client_messages import Error, Generate, Images, client_side_codec
from protocols.worker_messages import BatchDone, ItemDone

SAME_ID = {
    "a second Generate": lambda codec: codec.encode(Generate("c1", "another prompt", width=64, height=64)),
    "a Cancel with a field too many": lambda codec: [
        msgspec.msgpack.encode({"type": "cancel", "request_id": "c1", "x": 1})
    ],
    "a Generate of too many images": lambda codec: [
        msgspec.msgpack.encode({"type": "generate", "request_id": "c1", "prompt": "p", "n": 99})
    ],
}


def reply(sock: zmq.Socket, codec) -> object:
    assert sock.poll(30_000), "no reply"
    return codec.decode(sock.recv_multipart())


@pytest.mark.timeout(180)
def test_what_a_client_sends_under_the_id_of_its_request_in_flight_is_refused_without_that_id(tmp_path):
    codec = client_side_codec()
    context = zmq.Context()
    with engine_with_a_raw_worker(tmp_path) as (engine, worker):
        sock = raw_client(context, engine.client_address)
        try:
            sock.send_multipart(codec.encode(Generate("c1", "a lighthouse at dusk", width=64, height=64)))
            batch = worker.next_batch(timeout_s=30)  # held by the worker: c1 is in flight until it answers
            assert batch is not None, engine.log()
            for what, frames in SAME_ID.items():
                sock.send_multipart(frames(codec))
                refused = reply(sock, codec)
                assert isinstance(refused, Error) and refused.code == "invalid_request", what
                assert refused.request_id == "" and refused.message.startswith("request_id 'c1' is in flight: "), what
            (item,) = batch.items
            worker.send(
                BatchDone(batch.batch_id, [ItemDone(item.request_id, image_as_asked(batch), 0, [], None, 1.0, 50)])
            )
            served = reply(sock, codec)
            assert isinstance(served, Images) and served.request_id == "c1"
            assert not sock.poll(1_000), "a second reply"
        finally:
            sock.close()
            context.term()
