"""`argus bench engine` with a peak window too short to hold a reply fails saying so: it took a ratio to, and paced
its latency run at half of, a rate of 0 req/s, and ended in a ZeroDivisionError traceback."""

import argparse

import pytest

from loadgen.bench import engine_bench


@pytest.mark.timeout(90)
@pytest.mark.parametrize("door", ["zmq", "http"])
def test_a_peak_window_that_holds_no_reply_fails_naming_the_flag(door):
    args = argparse.Namespace(
        doors=door,
        workers=1,
        rounds=1,
        # a microsecond: every reply comes back after the window has closed (a loopback round trip takes longer)
        duration_s=1e-6,
        latency_s=0.1,
        warmup_s=0.0,
        concurrency=None,
        http_concurrency=None,
        size=64,
        json=None,
    )
    with pytest.raises(RuntimeError, match=r"no reply in its measured 1e-06 s.*--duration-s"):
        engine_bench.run(args)
