"""`argus bench checkpoint` fails at once when its engine dies, naming its exit: its probes waited 2 minutes for the
replies of a dead engine, then failed with a bare TimeoutError. Said in one line (ChildDied), its log (at INFO, never
empty) copied out of the folder the bench removes."""

import argparse
import re
import tempfile

import pytest

from loadgen.bench import checkpoint_bench
from loadgen.bench.subprocesses import ChildDied


@pytest.mark.timeout(60)
def test_an_engine_that_dies_during_the_probes_fails_the_run_naming_its_exit(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its work folder, and the copy of its log
    real_wait = checkpoint_bench._wait_restored

    def restored_then_killed(engine, *rest):
        real_wait(engine, *rest)
        engine.child.process.kill()

    monkeypatch.setattr(checkpoint_bench, "_wait_restored", restored_then_killed)
    args = argparse.Namespace(cache_mib=8, interval=1.0, duration=5.0, rate=10.0, json=None)
    with pytest.raises(ChildDied) as died:
        checkpoint_bench.run(args)
    (copy,) = tmp_path.glob("argus-engine-*.log")
    said = r"its engine-\d+ process \(pid \d+\) was killed by SIGKILL \(a kill -9, or the kernel's out-of-memory"
    assert re.fullmatch(rf"{said} killer\); its log is {re.escape(str(copy))}", str(died.value))
    assert "restored" in copy.read_text()  # what the engine logged, whole
