"""How every argus command logs: one line a record on stderr, as text for a terminal or, with `argus --log-format
json`, as one JSON object a line for a log collector (timestamp, level, logger, pid, message, and a traceback's text
as exc_info), so that no record's lines are split apart and every field is found by name. A worker process's
records name it too (in text `argus.worker[4242 worker=local-1]:`, in JSON a `worker` field): an engine's local
workers log to its stderr, each restart under another pid, which alone told them apart.

Python writes a library's warning (`warnings.warn`: torch's, diffusers', numpy's), an exception no code caught, in
any thread, and one it could not raise (`Exception ignored in ...`: a __del__ or a callback that failed) straight to
stderr, over several lines: under json a log collector could not parse them. There they are logged instead, a warning
by logger `py.warnings` at WARNING, an exception uncaught at CRITICAL and one ignored at ERROR, with its traceback."""

from __future__ import annotations

import logging
import sys
import threading

from pythonjsonlogger.json import JsonFormatter

from engine.logs.thread import LogThread

LOG_FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
_WORKER_TEXT = "%(asctime)s %(levelname)s %(name)s[%(process)d worker=%(worker)s]: %(message)s"
_JSON_NAMES = {"levelname": "level", "name": "logger", "process": "pid"}


def configure_logging(level: str, log_format: str, worker: str | None = None, *, threaded: bool = False) -> None:
    """Leaves logging alone where it is configured already (pytest's capture, a program that calls argus's main).
    `worker`: what each record names this process by, a worker's id (a fleet's ids); None for any other process.
    `threaded`: the records are written by a thread of their own (engine/logs/thread.py), for `argus serve` and
    `argus worker`."""
    if logging.getLogger().handlers:
        return  # as basicConfig would, and Python's hooks with it: they are that program's
    formatter = _formatter(log_format, worker)
    if threaded:
        handler: logging.Handler = LogThread(formatter, sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler])
    if log_format == "json":
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread
        sys.unraisablehook = _log_unraisable


def _formatter(log_format: str, worker: str | None) -> logging.Formatter:
    if log_format == "json":
        # the timestamp in ISO 8601, in UTC: asctime's is local time, without its zone
        fields = " ".join(f"%({name})s" for name in _JSON_NAMES) + " %(message)s"
        return JsonFormatter(
            fields,
            rename_fields=_JSON_NAMES,
            static_fields={"worker": worker} if worker is not None else None,
            timestamp=True,
            json_ensure_ascii=False,
        )
    if worker is not None:
        # a default, not part of the format: an id is a worker's to choose, and a % in it would break the format
        return logging.Formatter(_WORKER_TEXT, defaults={"worker": worker})
    return logging.Formatter(_TEXT)


def _log_uncaught(kind, value, traceback) -> None:  # noqa: ANN001 (sys.excepthook's arguments)
    logging.getLogger("argus").critical("uncaught exception", exc_info=(kind, value, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # ignored by Python's own hook too
        return
    name = args.thread.name if args.thread is not None else "a thread"
    logging.getLogger("argus").critical(
        "uncaught exception in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    what = unraisable.err_msg or "Exception ignored in"
    where = f" {unraisable.object!r}" if unraisable.object is not None else ""
    exc_info = (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
    logging.getLogger("argus").error("%s%s", what, where, exc_info=exc_info)
