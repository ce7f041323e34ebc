"""`argus` (and `python -m engine`): holds SIGTERM, SIGINT and SIGHUP before the command line is imported.

Its imports take a fifth of a second or more: a stop signal landing in them ended `argus serve` as Python's defaults
do, with exit 143 or a traceback, where it should stop as it does later on (engine/system/stop_signals.py). Every
command but `serve` gets Python's handlers back once the command is known.
"""

from __future__ import annotations

import sys

from engine.system.stop_signals import HeldStopSignals


def main() -> int:
    held = HeldStopSignals()
    from engine.cli import main as run_command

    return run_command(held=held, own_process=True)


if __name__ == "__main__":
    sys.exit(main())
