"""A worker that hears nothing from its engine for the engine's timeout dials it again: TCP tells it nothing when the
engine's host is gone or a NAT forgets the flow, and it said hello for ever into a dead connection. Dialling again
also drops the hellos that queued while no engine was up, which all reached the next one at once."""

import signal
import time

import pytest
import zmq
from tcp_proxy import DroppingProxy
from waiting import wait_for
from worker_in_process import welcome, worker_runtime
from zmq.utils.monitor import recv_monitor_message

from engine.client import ArgusClient
from engine_process import free_port, lone_and_fleet, start_engine, start_worker
from protocols.client_messages import Images
from protocols.worker_messages import Hello, engine_side_codec

# the engine's timeout a worker goes by before any engine welcomed it (workers/runtime.py), in hellos (1 a second)
HELLOS_PER_TIMEOUT = 10
# long enough past the timeout that the hellos before it was redialled show, against the bound asserted below
NO_ENGINE_S = 18
FLEET_SIZE = 10


@pytest.fixture(scope="module", autouse=True)
def no_engine(tmp_path_factory):
    """A lone worker and a fleet, each at an address no engine is up at, as (addresses, workers, when started): started
    with the module (autouse), so that the seconds without an engine its test waits for pass while the tests before it
    run."""
    addresses = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    with lone_and_fleet(tmp_path_factory.mktemp("no-engine"), addresses[0], FLEET_SIZE, addresses[1]) as (workers, _):
        yield addresses, workers, time.monotonic()


@pytest.mark.timeout(180)
def test_a_worker_whose_link_dies_without_a_word_comes_back(tmp_path):
    engine = start_engine(tmp_path, "--heartbeat-timeout", "2", workers=0, backend="sim")
    proxy = DroppingProxy(int(engine.worker_address.rsplit(":", 1)[1]))
    worker = start_worker(proxy.address, "sim", "--time-scale", "0.01", "--worker-id", "behind-a-nat")
    try:
        engine.wait_ready(1, timeout_s=60)
        proxy.go_silent()  # neither end is told: the worker's connection, and the engine's, look alive
        assert wait_for(lambda: engine.metric("argus_worker_losses_total", cause="heartbeat") == 1)
        # before, it never came back: it said hello into the dead connection, and the engine's end of it kept the
        # worker's identity, so a worker dialling again was not heard either
        assert wait_for(lambda: len(engine.ready()["workers"]) == 1, timeout_s=60), engine.log()
        with ArgusClient(engine.client_address, timeout_s=30) as client:
            assert isinstance(client.generate("after the cut", width=64, height=64), Images)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        proxy.close()
        assert engine.stop() == 0


def _connections(monitor: zmq.Socket, seconds: float) -> int:
    """The connections the fake engine accepts in the next `seconds`."""
    accepted, ends = 0, time.monotonic() + seconds
    while monitor.poll(max(0, int((ends - time.monotonic()) * 1000))):
        accepted += recv_monitor_message(monitor)["event"] == zmq.EVENT_ACCEPTED
    return accepted


@pytest.mark.parametrize("welcomed", [False, True])
def test_a_worker_redials_once_a_timeout_not_at_each_hello(welcomed):
    """Unwelcomed, it goes by 10 s; welcomed, by the engine's timeout (1 s here) from its last dial, not from the
    last message heard: dialling at each hello (10 a second here) tore down every connection an engine was taking up."""
    with worker_runtime(hello_retry_s=0.1) as served:
        monitor = served.engine.socket.get_monitor_socket(zmq.EVENT_ACCEPTED)
        try:
            if welcomed:
                welcome(served.engine, engine_timeout_s=1.0)  # then silent
            accepted = _connections(monitor, 3.0)  # before: 20 and more
            assert accepted <= (5 if welcomed else 1)  # unwelcomed, its first may predate the monitor
            assert accepted >= welcomed  # welcomed, it redials once the engine has been silent for its timeout
        finally:
            served.engine.socket.disable_monitor()
            monitor.close()


@pytest.mark.timeout(120)
def test_the_hellos_said_while_no_engine_was_up_do_not_all_reach_the_next(no_engine):
    """One a second were kept (up to 100,000, 320 bytes each: a fleet of 1,000 grew 1.1 GB an hour), and an engine
    that came up answered every one."""
    addresses, workers, started = no_engine
    context = zmq.Context()
    try:
        time.sleep(max(0.0, NO_ENGINE_S - (time.monotonic() - started)))
        hellos = [_hellos_on_binding(context, address) for address in addresses]
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        context.destroy(linger=0)
    # before: one for each second without an engine (about 18 and 180)
    assert 0 < hellos[0] <= HELLOS_PER_TIMEOUT + 3
    assert FLEET_SIZE <= hellos[1] <= FLEET_SIZE * (HELLOS_PER_TIMEOUT + 3)


def _hellos_on_binding(context: zmq.Context, address: str) -> int:
    """The hellos that reach an engine binding `address` at once (it answers none)."""
    engine = context.socket(zmq.ROUTER)
    engine.bind(address)
    codec = engine_side_codec()
    hellos, ends = 0, None
    # the burst queued for it, counted from its first message: a worker dials in within 100 ms of the bind, later when
    # descheduled on a loaded machine (a first poll of 300 ms would then count no hello at all); then one a second from
    # each worker (a burst that never ends is not one)
    while engine.poll(30_000 if ends is None else 300) and (ends is None or time.monotonic() < ends):
        ends = ends or time.monotonic() + 3
        _, *frames = engine.recv_multipart()
        hellos += isinstance(codec.decode(frames), Hello)
    engine.close(linger=0)
    return hellos
