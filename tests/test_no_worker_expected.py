"""A request that finds no worker waits for one only while one is expected (engine/fleet/worker_outlook.py): it waited
no_worker_timeout_s (60 s) for a 503 no_worker whatever the engine knew, a user of the OpenAI SDK, which retries
twice, 3 minutes. Real engine processes, over HTTP; no time is asserted: a client that gives up at 30 s, half the old
wait, fails the test where the engine waits as it did."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import tracemalloc
import urllib.error
import urllib.request

import pytest
from waiting import wait_for

from engine.fleet.registry import WorkerRegistry
from engine.fleet.restart_backoff import GIVE_UP_AFTER
from engine.fleet.worker_outlook import PROBES_KEPT, REMOTE_WAIT_S, WorkerOutlook
from engine.metrics import EngineMetrics
from engine_process import start_engine, start_worker

# half the old wait: an engine that still waits it is not answered in time
PATIENCE_S = 30


def generate(engine, timeout_s: float = PATIENCE_S) -> tuple[int, dict]:
    request = urllib.request.Request(
        engine.http + "/v1/images/generations",
        data=json.dumps({"prompt": "a lighthouse", "size": "64x64"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# imported first by every Python process whose PYTHONPATH leads to it: one the engine started as a worker of its own
# (its environment names the engine) ends as a worker that cannot serve as configured does, before its hello
_CANNOT_SERVE = """
import os
import subprocess
import tracemalloc
if os.environ.get("ARGUS_PARENT_PID"):
    os._exit(2)
"""


def test_with_every_worker_of_its_own_given_up_a_request_is_answered_at_once(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_CANNOT_SERVE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
    engine = start_engine(tmp_path, backend="sim", workers=2, wait=False)
    try:

        def given_up() -> bool:
            try:
                return "none is on its way: the engine's own 2 workers are given up" in (engine.ready()["reason"] or "")
            except OSError:  # not listening yet
                return False

        assert wait_for(given_up, timeout_s=120), engine.log()
        assert engine.log().count(f"before its hello {GIVE_UP_AFTER} times in a row") == 2
        status, body = generate(engine)
        assert (status, body["error"]["code"]) == (503, "no_worker"), body
        assert body["error"]["message"].startswith(
            "no worker is connected, and none is on its way: the engine's own 2 workers are given up"
        ), body
    finally:
        assert engine.stop() == 0


@pytest.fixture
def no_workers_of_its_own(tmp_path):
    engine = start_engine(tmp_path, backend="sim", workers=0)
    yield engine
    assert engine.stop() == 0


def test_with_workers_0_a_request_waits_a_short_while_for_a_remote_worker(no_workers_of_its_own):
    engine = no_workers_of_its_own
    status, body = generate(engine)
    assert (status, body["error"]["code"]) == (503, "no_worker"), body
    assert body["error"]["message"] == (
        f"no worker is connected, and none joined within {REMOTE_WAIT_S:g} s: --workers 0 starts none here, and no"
        " remote worker is connected or loading its model"
    )
    # a remote worker that joins within the wait serves the request: one started as the request is sent
    worker = start_worker(engine.worker_address, "sim", "--time-scale", "0")
    try:
        status, body = generate(engine)
        assert status == 200, body
    finally:
        worker.terminate()
        worker.wait(30)


class _Slots:
    """A launcher's word on its slots, as the outlook asks it."""

    def __init__(self, ids: tuple[str, ...], coming_back: bool, back_in_s: float | None = None):
        self.ids = ids
        self.back = coming_back
        self.back_in = back_in_s

    def coming_back(self) -> bool:
        return self.back

    def back_in_s(self) -> float | None:
        return self.back_in

    def owns(self, worker_id: str) -> bool:
        return worker_id in self.ids


def outlook(slots: _Slots) -> WorkerOutlook:
    return WorkerOutlook(
        WorkerRegistry(EngineMetrics()),
        slots,
        len(slots.ids),
        startup_timeout_s=180,
        no_worker_timeout_s=60,
        given_up_retry_s=300,
    )


def test_a_slot_of_its_own_coming_back_is_waited_for_and_none_is_not():
    assert outlook(_Slots(("local-0",), coming_back=True)).wait(0.0)[0] == 60
    wait_s, told = outlook(_Slots(("local-0", "local-1"), coming_back=False)).wait(0.0)
    assert wait_s == 0 and "the engine's own 2 workers are given up" in told and "every 300 s" in told


def test_whether_a_worker_is_on_its_way_is_said_as_the_wait_is_decided():
    """GET /ready's reason (engine/http/readiness.py): it said no worker was connected, whether one was on its way or
    none would come."""
    assert outlook(_Slots(("local-0",), coming_back=True)).coming(0.0) == (True, "one of its own is on its way")
    restarting = outlook(_Slots(("local-0",), coming_back=True, back_in_s=4.2)).coming(0.0)
    assert restarting == (True, "one of its own is on its way, in about 5 s by its last start")
    on_its_way, told = outlook(_Slots(("local-0", "local-1"), coming_back=False)).coming(0.0)
    assert not on_its_way and told.startswith("none is on its way: the engine's own 2 workers are given up"), told
    remote = outlook(_Slots((), coming_back=False))
    on_its_way, told = remote.coming(0.0)
    assert not on_its_way and told.startswith("none is announced (a remote worker may join at any time): --workers 0")
    remote.probed("gpu-7", 10.0)
    assert remote.coming(11.0) == (True, "a remote worker is on its way, loading its model")


def test_a_remote_worker_cleared_by_its_probe_is_waited_for_while_it_loads_its_model():
    """A worker probes the engine before it loads its model (minutes, for SD-XL): the engine knows it is coming."""
    remote = outlook(_Slots((), coming_back=False))
    assert remote.wait(0.0)[0] == REMOTE_WAIT_S
    remote.probed("gpu-7", 10.0)
    assert remote.wait(11.0)[0] == 60
    assert remote.wait(189.0)[0] == 60
    assert remote.wait(190.0)[0] == REMOTE_WAIT_S  # said no hello within --startup-timeout: not counted on
    remote.probed("gpu-7", 200.0)
    remote.joined("gpu-7")
    assert remote.wait(201.0)[0] == REMOTE_WAIT_S  # joined, and since gone: no longer loading


def test_with_its_own_slots_given_up_a_remote_worker_once_seen_is_waited_for_a_short_while():
    own = _Slots(("local-0",), coming_back=False)
    given_up = outlook(own)
    given_up.probed("local-0", 0.0)  # its own workers probe too: they are the launcher's word
    given_up.joined("local-0")
    assert given_up.wait(1.0)[0] == 0
    given_up.joined("gpu-7")  # a remote worker served it once: another may join
    assert given_up.wait(2.0)[0] == REMOTE_WAIT_S


def served_by_a_remote_worker_loading_its_model(tmp_path) -> tuple[int, dict]:
    """The answer to a request sent to an engine of --workers 0 once a tiny worker started by hand has probed it, and
    loads its model: run in a thread from the module's start (remote_worker_loading), its worker's imports (seconds)
    beside the other tests, which wait on the engine's clock, not the cores."""
    engine = start_engine(tmp_path, backend="tiny", workers=0)
    log = (tmp_path / "worker.log").open("w+")
    worker = start_worker(engine.worker_address, "tiny", stdout=log, stderr=subprocess.STDOUT)
    try:
        # said once its Probe was answered (workers/main.py)
        assert wait_for(lambda: "loading the tiny backend" in (tmp_path / "worker.log").read_text(), timeout_s=60)
        return generate(engine, timeout_s=120)
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
        assert engine.stop() == 0


@pytest.fixture(scope="module", autouse=True)
def remote_worker_loading(tmp_path_factory):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield pool.submit(served_by_a_remote_worker_loading_its_model, tmp_path_factory.mktemp("loading"))


def test_with_workers_0_a_request_waits_for_a_remote_worker_that_loads_its_model(remote_worker_loading):
    """A worker probes the engine before it loads its model: the engine, knowing it on its way, waits for it as for
    one of its own, past REMOTE_WAIT_S."""
    status, body = remote_worker_loading.result()
    assert status == 200, body


def test_probes_under_ever_new_ids_are_remembered_up_to_a_bound():
    """Any peer of the worker socket may probe under ever-new ids: while a worker was registered, none was forgotten
    (the outlook prunes its probes only when it asks whether a worker is expected, with none registered)."""
    remote = outlook(_Slots((), coming_back=False))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(25 * PROBES_KEPT):
            remote.probed(f"peer-{n}", 10.0)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < PROBES_KEPT * 400  # bytes: the latest probes alone (25 times as many without the bound)
    remote.probed("gpu-7", 11.0)
    assert remote.wait(12.0)[0] == 60  # the latest probe counts
    remote.joined("gpu-7")
    assert remote.wait(13.0)[0] == 60  # and those before it, still loading
