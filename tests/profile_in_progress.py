"""`argus profile latency` held in its first batch: a sim worker at --time-scale 10 takes a minute over it, so a test
can kill the worker, or stop the command, in the middle of a measurement. Its temporary folders go to a scratch
TMPDIR of the test's, which a test checks is left empty."""

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from engine_process import ROOT


@contextlib.contextmanager
def profile_in_its_first_batch(
    tmp_path: Path, module: str, stderr: int = subprocess.STDOUT
) -> Iterator[tuple[subprocess.Popen, Path]]:
    """The command run as `python -m module` (engine, or engine.cli), once its worker has said hello, and the scratch
    TMPDIR; killed at the end if still running. `stderr`: where its stderr goes (stdout goes to a file)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    output = tmp_path / "profile.out"
    command = [sys.executable, "-m", module, "profile", "latency", "--backend", "sim", "--time-scale", "10"]
    command += ["--out", str(tmp_path / "profile.json")]
    with open(output, "w") as out:
        profile = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=stderr, text=True, env={**os.environ, "TMPDIR": str(scratch)}
        )
    try:
        while "warming up" not in output.read_text():  # the worker said hello
            assert profile.poll() is None, output.read_text()
            time.sleep(0.1)
        yield profile, scratch
    finally:
        if profile.poll() is None:
            profile.kill()
