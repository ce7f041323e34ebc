"""How every argus command logs: one line a record on stderr, as text for a terminal or, with `argus --log-format
json`, as one JSON object a line for a log collector (timestamp, level, logger, pid, message, and a traceback's text
as exc_info), so that no record's lines are split apart and every field is found by name.

Python writes a library's warning (`warnings.warn`: torch's, diffusers', numpy's) and an exception no code caught, in
any thread, straight to stderr, over several lines: under json a log collector could not parse them. There they are
logged instead, a warning by logger `py.warnings` at WARNING, an exception at CRITICAL with its traceback."""

from __future__ import annotations

import logging
import sys
import threading

from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
_JSON_NAMES = {"levelname": "level", "name": "logger", "process": "pid"}


def configure_logging(level: str, log_format: str) -> None:
    """Leaves logging alone where it is configured already (pytest's capture, a program that calls argus's main)."""
    if logging.getLogger().handlers:
        return  # as basicConfig would, and Python's hooks with it: they are that program's
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        # the timestamp in ISO 8601, in UTC: asctime's is local time, without its zone
        fields = " ".join(f"%({name})s" for name in _JSON_NAMES) + " %(message)s"
        handler.setFormatter(JsonFormatter(fields, rename_fields=_JSON_NAMES, timestamp=True, json_ensure_ascii=False))
    else:
        handler.setFormatter(logging.Formatter(_TEXT))
    logging.basicConfig(level=level, handlers=[handler])
    if log_format == "json":
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind, value, traceback) -> None:  # noqa: ANN001 (sys.excepthook's arguments)
    logging.getLogger("argus").critical("uncaught exception", exc_info=(kind, value, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # ignored by Python's own hook too
        return
    name = args.thread.name if args.thread is not None else "a thread"
    logging.getLogger("argus").critical(
        "uncaught exception in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )
