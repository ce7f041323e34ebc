"""A worker runtime in this process, welcomed by a fake engine: tests drive it message by message.

Its backend is the sim one at time scale 0, holding the first batch it is given until released (serving the socket
meanwhile), and cut short, as a real backend is, once every image of it is aborted. Its welcome and serving serve
tests/test_fleet_in_process.py's fleet too.
"""

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from fake_engine import FakeEngine

from protocols.worker_messages import (
    PROTOCOL_VERSION,
    Generate,
    GenerateItem,
    Heartbeat,
    Hello,
    LevelSet,
    SetLevel,
    Welcome,
)
from workers.backend import Backend, all_aborted, cancel_all
from workers.config import WorkerConfig
from workers.main import load_backend
from workers.runtime import WorkerRuntime


class HeldFirstRun(Backend):
    def __init__(self):
        self._sim = load_backend(WorkerConfig("tcp://unused:1", "held", backend="sim", time_scale=0.0))
        self.started = threading.Event()
        self.release = threading.Event()
        self.ran: list[list[str]] = []  # the request ids of each batch it was given
        self.cut_short = False
        # as a stop that comes in a run's last slice: its images are made all the same
        self.runs_through = False

    def describe(self):
        return self._sim.describe()

    def run(self, batch, control):
        self.ran.append([item.request_id for item in batch.items])
        if len(self.ran) == 1:
            self.started.set()
            while not self.release.wait(0.01):
                control.between_steps()
            if not self.runs_through and all_aborted(batch, control):
                self.cut_short = True
                return cancel_all(batch)
        return self._sim.run(batch, control)


def batch(batch_id: int, *request_ids: str) -> Generate:
    items = [GenerateItem(rid, f"a harbour at dawn {rid}", i) for i, rid in enumerate(request_ids)]
    return Generate(batch_id, 0, 50, 1024, 1024, 5.0, "png", items)


def welcome(
    engine: FakeEngine, level: int = 0, engine_timeout_s: float = 600, heartbeat_interval_s: float = 0.5
) -> Hello:
    """Welcomes the worker's next hello, which it returns."""
    hello = engine.receive(Hello)
    engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s, engine_timeout_s, level))
    return hello


def taken_in(engine: FakeEngine, level: int = 0, skipping: tuple[type, ...] = ()) -> None:
    """Returns once the worker has taken in what was sent before: it answers in order."""
    engine.send(SetLevel(level))
    engine.receive(LevelSet, skipping=skipping)


@dataclass
class Served:
    engine: FakeEngine
    backend: HeldFirstRun
    runtime: WorkerRuntime
    thread: threading.Thread
    failed: list[BaseException]  # what serve() raised: what the worker's main reports

    def messages_until_stopped(self) -> list:
        """Every message the worker sends until its serve() has returned and its socket is closed, beats left out."""
        said = []
        while self.thread.is_alive() or self.engine.socket.poll(1000):
            if self.engine.socket.poll(100):
                _, *frames = self.engine.socket.recv_multipart()
                said.append(self.engine.codec.decode(frames))
        return [message for message in said if not isinstance(message, Heartbeat)]


@contextlib.contextmanager
def serving(serve: Callable[[], None], stop: Callable[[], None]):
    """`serve()` on a thread, and a list of what it raised; stopped (`stop()`) and joined on the way out."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            serve()
        except Exception as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield thread, failed
    finally:
        stop()
        thread.join(30)
    assert not thread.is_alive()


@contextlib.contextmanager
def worker_runtime(owned: bool = False, hello_retry_s: float = 1.0, backend: HeldFirstRun | None = None):
    """A runtime serving on a thread, not yet welcomed; stopped on the way out."""
    backend = backend or HeldFirstRun()
    with FakeEngine() as engine:
        runtime = WorkerRuntime(backend, engine.address, "turns", owned=owned, hello_retry_s=hello_retry_s)

        def stop() -> None:
            backend.release.set()
            runtime.stop()

        with serving(runtime.serve, stop) as (thread, failed):
            yield Served(engine, backend, runtime, thread, failed)
