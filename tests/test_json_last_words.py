"""Under `argus --log-format json` the error a command ends on is a JSON record, as a usage error's is
(docs/commands.md): an output that could not be written once the run was over, `argus loadgen`'s or a benchmark's, was
a plain line, and so was each line `argus loadgen` says as it runs, which a log collector could not parse."""

import json
import subprocess
import sys

import pytest

from engine_process import ROOT

# nothing listens: the one request goes unanswered, and the run ends with its drain
_LOADGEN = ["loadgen", "--zmq", "tcp://127.0.0.1:9", "--rate", "20", "--max-requests", "1", "--drain-s", "0.5"]


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ([*_LOADGEN, "--no-progress", "--json", "/dev/full"], "argus loadgen: error writing /dev/full"),
        (["bench", "controller", "--workers", "2", "--solves", "1", "--json", "/dev/full"], "argus bench: could not"),
    ],
    ids=["loadgen", "bench"],
)
def test_an_output_not_written_at_the_end_is_a_json_record(command, error):
    run = subprocess.run(
        [sys.executable, "-m", "engine", "--log-format", "json", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    records = [json.loads(line) for line in run.stderr.splitlines()]  # each line one record, none plain
    assert all(isinstance(record, dict) for record in records)
    last = records[-1]
    assert last["level"] == "ERROR" and last["message"].startswith(error), last
    assert last["message"].endswith("/dev/full: No space left on device"), last
