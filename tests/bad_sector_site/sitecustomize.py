"""Imported at the start of every Python process whose PYTHONPATH leads here (tests/bad_sectors.py,
engine_environment): one whose environment names a bad sector fails its reads there."""

import os
import sys

if os.environ.get("ARGUS_TEST_BAD_SECTOR"):
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import bad_sectors

    bad_sectors.from_environment()
