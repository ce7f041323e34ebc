"""The files that hold secrets (a CURVE secret key, the HTTP API keys) or say who is admitted (an allow directory's
public keys): used when other users may read or write them, as a Kubernetes Secret is mounted 0644 unless told
otherwise, but warned of, naming the file, its mode and what a user who is not its owner can do with it (on a
read-only mount, read it alone)."""

from __future__ import annotations

import logging
import os
from pathlib import Path


def warn_if_open_to_others(path: str | Path, why: str, log: logging.Logger, readable: bool = False) -> None:
    """Warns on `log` when users other than the owner may write to `path` (or, `readable`, read it), naming its mode
    and `why` that matters."""
    mode = os.stat(path).st_mode & 0o777
    access = [
        word
        for word, bits, asked in (("readable", 0o044, readable), ("writable", 0o022, True))
        if asked and mode & bits
    ]
    if "writable" in access and os.statvfs(path).f_flag & os.ST_RDONLY:
        # on a read-only mount no one writes, whatever the mode: a Kubernetes Secret's volume is one, its folder mode
        # 1777, and every start and SIGHUP asked to chmod what the mount refuses to change
        access.remove("writable")
    if access:
        log.warning("%s is %s by other users (mode %04o): %s", path, " and ".join(access), mode, why)
