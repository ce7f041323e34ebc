"""Whether an engine started in a session of its own (start_engine's) left anything of it running once it stopped:
its own Ray instance's processes (the GCS, the raylet, the raylet's agents) among them."""

import os
import signal

import waiting
from process_checks import left_in_session


def assert_nothing_left(engine) -> None:
    """Nothing of the engine's session is left once it has stopped; killed if it is, so the test leaves nothing
    either."""
    session = engine.process.pid
    try:
        # bounded for a loaded machine: the agents left ran on for a minute or more
        assert waiting.wait_for(lambda: not left_in_session(session), timeout_s=20), left_in_session(session)
    finally:
        for pid in left_in_session(session):
            os.kill(pid, signal.SIGKILL)
