"""Ctrl-C and the stop signals during `argus loadgen`: they cut the run short in stages, and its results are still
written; once the run is over, SIGINT goes back to the handler the caller chose."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from engine.logs.said import say

if TYPE_CHECKING:
    from loadgen.run import Interrupt


@contextlib.contextmanager
def interruptible(args: argparse.Namespace) -> Iterator[Interrupt]:
    """Ctrl-C stops the sending, a second one the waiting for replies, SIGTERM (or SIGHUP) both, unless the process was
    started ignoring it (nohup): the results of what was sent are still reported and written, as a run cut short."""
    from loadgen.run import Interrupt

    interrupt = Interrupt()
    loop = asyncio.get_running_loop()

    def on_ctrl_c() -> None:
        waiting = interrupt.stop_sending.is_set()
        interrupt.next_stage()
        said = "not waiting for the replies still due" if waiting else "sending no more (Ctrl-C again: stop waiting)"
        say(args, f"\nargus loadgen: interrupted: {said}", logging.WARNING)

    loop.add_signal_handler(signal.SIGINT, on_ctrl_c)
    for stop in (signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal it ran in was closed
        # one this process was started ignoring stays ignored: `nohup argus loadgen ... &` asks the run to outlive its
        # terminal, and closing the terminal cut it short (the handler replaced nohup's SIG_IGN)
        if signal.getsignal(stop) != signal.SIG_IGN:
            loop.add_signal_handler(stop, interrupt.stop_now)
    try:
        yield interrupt
    finally:
        for handled in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(handled)
        # the run is over, its results not yet written: one more Ctrl-C (a third, pressed in a hurry) raised
        # KeyboardInterrupt wherever it landed (the loop's teardown, the plot's import), and the plot and the printed
        # summary were lost after a traceback. It now waits for them (sigint_after_the_run then hands SIGINT on)
        signal.signal(signal.SIGINT, _say_results_come)


def _say_results_come(signum: int, frame: object) -> None:
    # os.write, not print: a handler that prints while the interrupted code prints fails ('reentrant call')
    os.write(sys.stderr.fileno(), b"\nargus loadgen: interrupted: the run is over, its results are being written\n")


@contextlib.contextmanager
def sigint_after_the_run(handler: object) -> Iterator[None]:
    """`handler` takes SIGINT once the block (the run, its results written) is over."""
    try:
        yield
    finally:
        # a Ctrl-C once the run was over was put off until its results were written (interruptible); from now on
        # `handler` takes it. One taken and not yet handled is handled first, by the handler that took it (setting a
        # handler runs those pending): with Python's handler put back instead, it raised KeyboardInterrupt here, a
        # traceback after the summary (Ctrl-C held down, on a loaded machine)
        if signal.getsignal(signal.SIGINT) is _say_results_come:
            signal.signal(signal.SIGINT, _say_results_come)
        signal.signal(signal.SIGINT, handler)
