"""How every argus command logs: one line a record on stderr, as text for a terminal or, with `argus --log-format
json`, as one JSON object a line for a log collector (timestamp, level, logger, pid, message, and a traceback's text
as exc_info), so that no record's lines are split apart and every field is found by name."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
_JSON_NAMES = {"levelname": "level", "name": "logger", "process": "pid"}


def configure_logging(level: str, log_format: str) -> None:
    """Leaves logging alone where it is configured already (pytest's capture, a program that calls argus's main)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        # the timestamp in ISO 8601, in UTC: asctime's is local time, without its zone
        fields = " ".join(f"%({name})s" for name in _JSON_NAMES) + " %(message)s"
        handler.setFormatter(JsonFormatter(fields, rename_fields=_JSON_NAMES, timestamp=True, json_ensure_ascii=False))
    else:
        handler.setFormatter(logging.Formatter(_TEXT))
    logging.basicConfig(level=level, handlers=[handler])
