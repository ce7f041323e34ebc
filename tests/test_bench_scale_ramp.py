"""`argus bench scale`'s ramp and its wait for the workers, in this process: each step's measurement stood in for by
an engine that keeps up with any rate up to its capacity, the engine by one that answers as told."""

import argparse

import pytest

from loadgen.bench import scale_bench
from loadgen.bench.scale_bench import Step
from loadgen.bench.subprocesses import RunFailed


def ramp_against(monkeypatch, capacity_rps: float, **flags) -> list[float]:
    """The rates the ramp offers an engine that keeps up with up to `capacity_rps`."""

    def measured(args, engine, fleets, tmp, pid, rate):
        answered = rate if rate <= capacity_rps else capacity_rps
        return Step(rate, answered, 1.0, 2.0, 0, 0, 100, 0.5, 0.1, 1.0, 0.1)

    monkeypatch.setattr(scale_bench, "_measured_step", measured)
    args = argparse.Namespace(load_processes=1, step_s=1.0, p99_limit_ms=200.0, **flags)
    return [step.offered_rps for step in scale_bench._ramp(args, None, [], None, 0)]


@pytest.mark.parametrize("max_rps", [300.0, 2000.0])
def test_a_ramp_that_keeps_up_offers_max_rps_itself_last(monkeypatch, max_rps):
    """x1.3 from 250 passes 2,000 between 1,568 and 2,039: the ramp stopped at 1,568, and a run given --max-rps 2000 to
    check the 2,000 req/s target reported it not reached, never having offered it."""
    offered = ramp_against(monkeypatch, capacity_rps=10_000.0, start_rps=250.0, growth=1.3, max_rps=max_rps)
    assert offered[-1] == max_rps
    assert offered[:-1] == pytest.approx([250.0 * 1.3**i for i in range(len(offered) - 1)])
    assert offered[-2] < max_rps


def test_a_ramp_that_saturates_at_max_rps_halves_the_last_interval(monkeypatch):
    offered = ramp_against(monkeypatch, capacity_rps=1_800.0, start_rps=250.0, growth=1.3, max_rps=2000.0)
    last_kept = 250.0 * 1.3**7  # 1,568
    assert offered[-3:] == pytest.approx(
        [2000.0, (last_kept + 2000.0) / 2, (last_kept + 2000.0) / 2 + (2000.0 - last_kept) / 4]
    )


def test_a_ramp_starting_at_max_rps_offers_it_once(monkeypatch):
    assert ramp_against(monkeypatch, capacity_rps=10_000.0, start_rps=500.0, growth=1.3, max_rps=500.0) == [500.0]


class NeverAllJoined:
    """An engine two of whose four workers have joined, for good."""

    def wait_ready(self, workers, timeout_s):
        raise TimeoutError(f"engine not ready with {workers} workers:\n(its log)")

    def ready(self):
        return {"workers": [{"name": "fleet0-0/0"}, {"name": "fleet0-1/0"}]}


def test_workers_not_all_joined_within_the_ready_timeout_is_one_line_saying_how_many_did():
    """It was a TimeoutError traceback, the engine's log's tail in it, naming no flag: a thousand workers on a slow
    machine may take longer than the default 300 s."""
    with pytest.raises(RunFailed) as failed:
        scale_bench._wait_workers(NeverAllJoined(), [], 4, timeout_s=0.01)
    assert str(failed.value) == "2 of the 4 workers joined within --ready-timeout-s (0.01 s): raise it"
