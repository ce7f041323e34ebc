"""The engine's temporary folders (its local workers' IPC socket; under --launcher ray without --curve-secret, the key
pair made for the run), and those dead engines left.

An engine removes its folders as it stops, or fails to start; one killed (SIGKILL, the OOM killer) cannot, and they
gathered in the temporary directory, a key pair's secret among them. Each folder holds a file its engine keeps locked
(flock) while it lives: the kernel lets go of the lock when the process dies, however it dies, in whatever PID
namespace. An engine that starts removes this user's folders whose lock it can take: their engine is dead. A folder
without the file (another program's, or an engine's from before 2026-12-04) is left as it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path

from engine.commands.arg_types import UsageError

log = logging.getLogger("argus.engine")

PREFIX = "argus-"
LOCK_FILE = "engine.lock"


def make_temp_folder(prefix: str, resources: contextlib.ExitStack) -> str:
    """A folder of this engine's in the temporary directory, locked for its life; `resources` removes it. `prefix`
    starts with PREFIX, which the next engines look for."""
    folder = tempfile.mkdtemp(prefix=prefix)
    resources.callback(shutil.rmtree, folder, True)
    # locked under another name, then named: an engine starting meanwhile never finds the file unlocked
    locking = os.path.join(folder, f".{LOCK_FILE}")
    fd = os.open(locking, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    resources.callback(os.close, fd)  # closed before the folder is removed (the stack unwinds in reverse)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(locking, os.path.join(folder, LOCK_FILE))
    return folder


def remove_dead_engines_folders() -> None:
    """Removes the temporary folders of this user's engines that died without removing them. The first look at the
    temporary directory: UsageError if there is none the engine can write in."""
    try:
        root = tempfile.gettempdir()
    except FileNotFoundError as error:
        # $TMPDIR, /tmp, /var/tmp, /usr/tmp and the current directory all unwritable (a container's read-only root
        # filesystem): it was a traceback
        raise UsageError(
            f"{error.strerror}: the engine makes its local workers' IPC socket in one; set TMPDIR to a directory it"
            " can write in"
        ) from None
    removed = [folder for folder in Path(root).glob(f"{PREFIX}*") if _remove_if_dead(folder)]
    if removed:
        log.warning(
            "removed %d temporary folder%s left in %s by engines that were killed: %s",
            len(removed),
            "" if len(removed) == 1 else "s",
            root,
            ", ".join(folder.name for folder in removed),
        )


def _remove_if_dead(folder: Path) -> bool:
    try:
        if folder.is_symlink() or folder.stat().st_uid != os.getuid():
            return False
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # no lock file: not an engine's folder, or one of an engine that locked none
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # its engine lives
        return False
    finally:
        os.close(fd)
    shutil.rmtree(folder, ignore_errors=True)
    return True
