import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from port_shares import draw_ports_from_share  # noqa: E402 - a helper beside this file, on the path from the line above

# The suite shares two cores among pytest, engines and their workers: a torch that spreads each tiny convolution over
# every core (its default) spends most of a step waiting for a core another process holds (42 ms a tiny UNet step
# with one thread against 230 to 390 ms with two, measured while other processes ran). Set before anything imports
# torch, for this process, the workers tests start by hand and the engines' workers (an engine gives each its share of
# the cores as --threads, at most OMP_NUM_THREADS: test_cache_hit_counts took 169 to 228 s under load with two threads
# a tiny worker, 20 to 26 s with one).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from engines_ahead import EnginesAhead  # noqa: E402 - it imports numpy, whose threads OMP_NUM_THREADS sets
from scripted_engine import ScriptedEngine  # noqa: E402 - as engines_ahead, after OMP_NUM_THREADS

# The engines, workers and Ray instances the suite starts make their temporary folders in one of its own, removed at
# its end: an engine a test kills (SIGKILL) cannot remove its own, and in /tmp they gathered one a kill. Short, under
# /tmp: Ray puts AF_UNIX sockets about 60 characters deep in it, within the 107 a socket path may have (pytest's
# tmp_path is too long for that). pytest's own tmp_path is unchanged: its tempfile settled on /tmp before this runs.
# pytest-xdist's workers inherit the TMPDIR set here: each makes its folder beside the first, not in it (Ray's
# sockets were then too deep), and removes its own.
_SUITE_TMPDIR = tempfile.mkdtemp(
    prefix="argus-tests-", dir=os.environ.setdefault("ARGUS_TESTS_TMP_BASE", tempfile.gettempdir())
)
os.environ["TMPDIR"] = _SUITE_TMPDIR

# more than the suite's parallel processes, with the ones pytest-xdist starts in place of a crashed one (gw2, ...)
_PORT_SHARES = 8
if "PYTEST_XDIST_WORKER" in os.environ:  # "gw0", "gw1", ...
    draw_ports_from_share(int(os.environ["PYTEST_XDIST_WORKER"][2:]) % _PORT_SHARES, _PORT_SHARES)


@pytest.fixture
def ctrl_c_interrupts():
    """Ctrl-C raising KeyboardInterrupt, as in a program run from a terminal, even in a suite started as a background
    job of a shell without job control: SIGINT is ignored there, and Python then installs no handler for it."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture
def scripted_engine():
    """A ScriptedEngine (tests/scripted_engine.py) for the test, closed after it: what engine.client's tests talk to."""
    engine = ScriptedEngine()
    yield engine
    engine.close()


@pytest.fixture
def prompts(tmp_path) -> str:
    """A prompt file of three lines, for the commands that read one (calibrate, profile quality)."""
    path = tmp_path / "prompts.txt"
    path.write_text("a red fox\na blue whale\na green frog\n")
    return str(path)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "own_engine(*args, **keywords): the test's own engine (start_engine's arguments), as own_engine"
    )


@pytest.fixture(scope="module")
def engines_ahead(request, tmp_path_factory):
    """The engines of the module's tests marked own_engine, started ahead (tests/engines_ahead.py): a module asks for
    it with all its tests (pytestmark = pytest.mark.usefixtures("engines_ahead")), to have the first start with it."""
    ahead = EnginesAhead((item for item in request.session.items if item.module is request.module), tmp_path_factory)
    yield ahead
    ahead.close()


@pytest.fixture
def own_engine(request, engines_ahead):
    """The test's own engine, started ahead as its own_engine mark says, stopped after it."""
    engine = engines_ahead.take(request.node)
    yield engine
    assert engine.stop() == 0


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SUITE_TMPDIR, ignore_errors=True)
