"""An engine that starts removes the temporary folders engines killed (SIGKILL) left behind, and only theirs: not a
live engine's, nor a folder it cannot tell is an engine's (no lock file)."""

import errno
import os
import signal
import tempfile
from pathlib import Path

from engine.cli import main
from engine.system.temp_folders import LOCK_FILE
from engine_process import start_engine


def engine_folders(root: Path) -> set[str]:
    return {folder.name for folder in root.iterdir() if (folder / LOCK_FILE).exists()}


def test_an_engine_removes_the_folders_of_killed_engines_and_only_theirs(tmp_path, monkeypatch):
    # short: the local workers' IPC socket is made in it (107 bytes at most)
    root = Path(tempfile.mkdtemp(prefix="t", dir=os.environ["TMPDIR"]))
    monkeypatch.setenv("TMPDIR", str(root))
    decoy = root / "argus-not-an-engines"
    decoy.mkdir()
    engines = []
    try:
        live = start_engine(tmp_path, workers=0, backend="sim")
        engines.append(live)
        (live_folder,) = engine_folders(root)
        killed = start_engine(tmp_path, workers=0, backend="sim")
        engines.append(killed)
        (killed_folder,) = engine_folders(root) - {live_folder}
        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait()
        assert engine_folders(root) == {live_folder, killed_folder}  # left behind, its lock let go

        third = start_engine(tmp_path, workers=0, backend="sim")
        engines.append(third)
        assert f"removed 1 temporary folder left in {root} by engines that were killed: {killed_folder}" in third.log()
        (third_folder,) = engine_folders(root) - {live_folder}
        assert not (root / killed_folder).exists() and third_folder != killed_folder
        assert decoy.is_dir()
        assert third.stop() == 0 and live.stop() == 0
        assert sorted(p.name for p in root.iterdir()) == [decoy.name]  # each removed its own as it stopped
    finally:
        for engine in engines:
            engine.stop()


def test_an_engine_without_a_temporary_directory_it_can_write_in_says_so(monkeypatch, capsys):
    def none_usable() -> str:  # as tempfile says it of a read-only root filesystem with TMPDIR unset
        raise FileNotFoundError(errno.ENOENT, "No usable temporary directory found in ['/tmp', '/var/tmp', '/usr/tmp']")

    monkeypatch.setattr(tempfile, "gettempdir", none_usable)
    ports = ("--port", "0", "--client-listen", "tcp://127.0.0.1:0", "--worker-listen", "tcp://127.0.0.1:0")
    assert main(["serve", "--backend", "sim", "--workers", "0", *ports]) == 2  # a traceback, exit 1
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said == (
        "argus serve: error: No usable temporary directory found in ['/tmp', '/var/tmp', '/usr/tmp']: the engine makes"
        " its local workers' IPC socket in one; set TMPDIR to a directory it can write in"
    )
