"""A stopped worker ends its process at once, without the interpreter's teardown: two tiny workers tearing down
torch's, transformers' and diffusers' modules together (2 to 3.4 s of CPU each on a loaded 2-core VM) took longer than
the 5 s their engine gives them, and every stop of `make serve` killed them, warning that they 'did not stop within
5 s of being asked to'. The teardown is seen by what it runs (tests/exit_marker_site), not timed; sim workers take the
same path out as the model backends' do."""

import os
import signal
from pathlib import Path

from waiting import wait_for

from engine.system.proc_reads import local_workers_of
from engine_process import ROOT, start_engine, start_worker

SITE = Path(__file__).resolve().parent / "exit_marker_site"


def test_stopped_workers_end_without_the_interpreters_teardown(tmp_path, monkeypatch):
    markers = tmp_path / "exits"
    markers.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SITE), str(ROOT)]))
    monkeypatch.setenv("ARGUS_TEST_EXIT_MARKERS", str(markers))
    engine = start_engine(tmp_path, "--time-scale", "0", backend="sim", workers=1)
    try:
        local = local_workers_of(engine.process.pid)
        by_hand = start_worker(engine.worker_address, "sim", "--time-scale", "0", "--worker-id", "by-hand")
        assert wait_for(lambda: b"by-hand/" in engine.get("/ready")[1])
        by_hand.send_signal(signal.SIGTERM)
        assert by_hand.wait(timeout=60) == 0
        engine.process.send_signal(signal.SIGTERM)
        assert engine.process.wait(timeout=60) == 0
    finally:
        if engine.process.poll() is None:
            os.killpg(engine.process.pid, signal.SIGKILL)  # its group: its workers too (start_engine)
            engine.process.wait()
    exited = {int(marker.name) for marker in markers.iterdir()}
    assert engine.process.pid in exited  # the engine ends through the teardown: the marker works
    assert len(local) == 1 and not exited & {*local, by_hand.pid}
    assert "did not stop within" not in engine.log()
