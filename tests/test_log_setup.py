"""Under `argus --log-format json` every line on stderr is one JSON object: a library's warning, an exception no code
caught (in a thread, or the main one) and one Python ignored (a __del__ that raised) too, which Python writes over
several plain lines."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

_PROGRAM = textwrap.dedent(
    """
    import threading, warnings
    from engine.logs.setup import configure_logging

    configure_logging("INFO", "json")
    warnings.warn("deprecated\\nsoon", FutureWarning)

    class Leaky:
        def __del__(self):
            raise OSError("in a finalizer")

    Leaky()

    def fail():
        raise RuntimeError("in a thread")

    thread = threading.Thread(target=fail, name="solver")
    thread.start()
    thread.join()
    raise ValueError("at the top")
    """
)


def test_warnings_and_uncaught_exceptions_are_json_lines():
    ran = subprocess.run([sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    records = [json.loads(line) for line in ran.stderr.splitlines()]
    assert all(isinstance(record, dict) for record in records)
    assert [(record["level"], record["logger"]) for record in records] == [
        ("WARNING", "py.warnings"),
        ("ERROR", "argus"),
        ("CRITICAL", "argus"),
        ("CRITICAL", "argus"),
    ]
    warned, ignored, in_thread, at_top = records
    assert "FutureWarning: deprecated\nsoon" in warned["message"]
    assert ignored["message"].startswith("Exception ignored")
    assert "OSError: in a finalizer" in ignored["exc_info"]
    assert in_thread["message"] == "uncaught exception in thread solver"
    assert "RuntimeError: in a thread" in in_thread["exc_info"]
    assert "ValueError: at the top" in at_top["exc_info"]
