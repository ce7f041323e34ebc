"""An engine as its front doors (HTTP, ZeroMQ) see it, without a dispatcher or workers: each request admitted waits
for the reply the test gives it, and what the door then does of its own (count it, cancel it) is kept to be read. For
what a door decides, in process and in milliseconds; an engine of its own runs the rest."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

import zmq
from aiohttp.test_utils import TestClient, TestServer
from waiting import eventually

from engine.config import EngineConfig
from engine.dispatch.jobs import AdmittedRequest
from engine.http.api import build_app
from engine.http.image_files import ImageFiles
from engine.metrics import EngineMetrics
from engine.server import Engine
from engine.zmq.door import ClientDoor
from engine_process import free_port, raw_client
from protocols.client_messages import Busy, Error, Generate, client_side_codec

_CLIENT_CODEC = client_side_codec()


class StandInEngine:
    def __init__(self, **config):
        self.config = EngineConfig(**config)
        self.api_keys = self.config.api_keys
        self.metrics = EngineMetrics()
        self.image_files = ImageFiles(self.config.image_url_store_bytes, self.config.image_url_ttl_s)
        # the calls a door makes of the launcher, dispatcher and controller (back_in_s, cancel, plan_json) are
        # answered here
        self.launcher = self
        self.dispatcher = self
        self.control_loop = self
        self.plan: dict | None = None  # the controller's plan, once it made one
        # what submit answers instead of admitting, when set
        self.refusal: Busy | Error | None = None
        # when the engine's own workers are back (the launcher's word), for no_worker's Retry-After
        self.back_in: float | None = None
        self.admitted: list[AdmittedRequest] = []
        self.clients: list[str] = []  # whom each request submitted was counted for
        self.counted: list[object] = []  # the replies the door counted
        self.cancelled: list[AdmittedRequest] = []
        self.running = True  # admitting requests (Engine.running): false, the door closes each connection it answers

    def submit(self, spec: Generate, client: str = "") -> AdmittedRequest | Busy | Error:
        self.clients.append(client)
        if self.refusal is not None:
            return self.refusal
        future = asyncio.get_running_loop().create_future()
        request = AdmittedRequest(
            spec, spec.width or 64, spec.height or 64, spec.steps or 4, [0] * spec.n, time.monotonic(), None, future
        )
        self.admitted.append(request)
        return request

    # the engine's own: counted in the metrics, as those a door refuses are
    count_refusal = Engine.count_refusal

    def count_reply(self, request: AdmittedRequest, reply: object) -> None:
        self.counted.append(reply)

    def cancel(self, *requests: AdmittedRequest) -> None:
        self.cancelled.extend(requests)

    def back_in_s(self) -> float | None:
        return self.back_in

    def plan_json(self) -> dict | None:
        return self.plan

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0


@dataclasses.dataclass
class ServedDoor:
    """The engine's ZeroMQ door served in process, and what its clients connect with."""

    context: zmq.Context
    address: str
    door: ClientDoor

    clients: list[zmq.Socket] = dataclasses.field(default_factory=list)

    def client(self, identity: bytes) -> zmq.Socket:
        """A client of the door, closed with it (if the test did not close it first)."""
        self.clients.append(raw_client(self.context, self.address, identity))
        return self.clients[-1]

    async def lost(self, identity: bytes) -> None:
        """Once the door's socket has dropped the connection of the client `identity`, closed: until then, a reply
        sent to it is taken by the connection, and lost with it."""
        # nothing reaches a closed client
        if not await eventually(lambda: self.door._socket.send(identity, [b""]) != 0, timeout_s=10):
            raise TimeoutError("the door still holds the client's connection")


@contextlib.asynccontextmanager
async def zmq_door_of(engine: StandInEngine, address: str | None = None) -> AsyncIterator[ServedDoor]:
    """The engine's ZeroMQ door, on `address` (TCP on loopback unless given: a client's connection closed is then
    seen as a remote client's is)."""
    address = address or f"tcp://127.0.0.1:{free_port()}"
    context = zmq.Context()
    door = ClientDoor(engine, context, (address,))
    door.start()
    served = ServedDoor(context, address, door)
    try:
        yield served
    finally:
        for client in served.clients:
            client.close()
        door.close()
        context.term()


@contextlib.asynccontextmanager
async def http_door_of(engine: StandInEngine, loopback: bool = True) -> AsyncIterator[TestClient]:
    """A client of the engine's HTTP app, served on loopback; `loopback` False: the app of an engine bound beyond it."""
    async with TestClient(TestServer(build_app(engine, loopback), host="127.0.0.1")) as client:
        yield client


async def admitted(engine: StandInEngine, before: int = 0) -> AdmittedRequest:
    """The request admitted after the first `before`, once it is (its client's post runs as a task)."""
    if not await eventually(lambda: len(engine.admitted) > before, timeout_s=5):
        raise TimeoutError("no request admitted")
    return engine.admitted[before]


async def sent_and_gone(engine: StandInEngine, served: ServedDoor, identity: bytes, ids: list[str]) -> list:
    """The requests `ids`, sent by a client that then goes away: each admitted, none answered yet."""
    client = served.client(identity)
    before = len(engine.admitted)
    for request_id in ids:
        client.send_multipart(generate(request_id))
    requests = [await admitted(engine, before + i) for i in range(len(ids))]
    client.close()
    await served.lost(identity)
    return requests


def generate(request_id: str) -> list:
    """A Generate's frames, as a client sends them."""
    return _CLIENT_CODEC.encode(Generate(request_id, "a heron", width=64, height=64))


async def replies(sock: zmq.Socket, count: int) -> list:
    """The next `count` replies to a client of the ZeroMQ door, read without holding up the loop the door runs on."""
    answers = []

    def all_read() -> bool:
        while len(answers) < count and sock.poll(0):
            answers.append(_CLIENT_CODEC.decode(sock.recv_multipart()))
        return len(answers) == count

    if not await eventually(all_read, timeout_s=10):
        raise TimeoutError(f"{len(answers)} of {count} replies")
    return answers
