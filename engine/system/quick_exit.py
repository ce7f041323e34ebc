"""Ending a process whose work is done without the interpreter's teardown: its log written, nothing else run."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def exit_at_once(code: int) -> NoReturn:
    """Exits with `code` once the log and the standard streams are written. For a process that has closed what it
    opened (sockets, child processes, temporary folders): the interpreter's teardown of torch's, transformers' and
    diffusers' modules is a garbage collection over all they hold, seconds of CPU on a loaded machine, and no
    atexit handler or finalizer of theirs is needed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
