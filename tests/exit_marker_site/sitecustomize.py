"""Imported at the start of every Python process whose PYTHONPATH leads here (tests/test_worker_exit.py): one whose
environment names a folder in ARGUS_TEST_EXIT_MARKERS leaves a file there, named by its pid, if it exits through the
interpreter's teardown (which runs atexit's handlers); one that ends with os._exit leaves none."""

import atexit
import os
from pathlib import Path

if os.environ.get("ARGUS_TEST_EXIT_MARKERS"):
    atexit.register((Path(os.environ["ARGUS_TEST_EXIT_MARKERS"]) / str(os.getpid())).touch)
