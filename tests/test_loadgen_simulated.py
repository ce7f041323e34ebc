"""`argus loadgen` against an engine of SIMULATED workers (sim backend): its figures say so, in the printed summary
and in the plot's title; and what its capacity is for --load, at which steps."""

import asyncio
import json

import pytest
from pictures import png_title

from engine_process import start_engine
from loadgen import cli
from loadgen.arrivals import Arrival
from loadgen.clients import RequestOptions, ZmqLoadClient
from loadgen.run import run_load


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("sim"), "--time-scale", "0.02", workers=1, backend="sim")
    yield engine
    assert engine.stop() == 0


@pytest.mark.timeout(60)
def test_the_summary_and_the_plot_of_sim_workers_say_simulated(engine, tmp_path, capsys):
    """The PNG's title and axes said nothing of it, and the summary only beside its quality."""
    plot, summary_path = tmp_path / "timeline.png", tmp_path / "summary.json"
    argv = ["--url", engine.http, "--rate", "5", "--max-requests", "3", "--size", "64x64", "--no-progress"]
    assert cli.main([*argv, "--plot", str(plot), "--json", str(summary_path)]) == 0
    printed = capsys.readouterr()
    assert json.loads(summary_path.read_text())["simulated"] is True
    assert printed.out.splitlines()[0].startswith("SIMULATED  ")
    assert png_title(plot).startswith("SIMULATED (figures from sim workers): 3 requests")
    # it said 'sending 1 requests over 0.0 s', and the span from the start beside a rate from the first send
    assert "sending 3 requests from " in printed.err and "/s) to " in printed.err


@pytest.mark.timeout(60)
def test_load_with_steps_says_its_capacity_is_at_the_engines_default_steps(engine, capsys):
    """--load 0.7 --steps 10 printed '--load 0.7 x 1.31 requests/s', a capacity for 50 steps, as if it were for 10."""
    argv = ["--url", engine.http, "--load", "0.5", "--max-requests", "1", "--size", "64x64", "--no-progress"]
    assert cli.main([*argv, "--steps", "10"]) == 0
    said = capsys.readouterr().err
    capacity = engine.ready()["exact_capacity_rps"]
    assert (
        f"--load 0.5 x {capacity:.3g} requests/s: the exact capacity of the 1 worker ready at {engine.http}, at its"
        " default 50 steps: the engine gives none at --steps 10, and this one is not scaled for them"
    ) in said
    assert "sending 1 request at " in said
    assert cli.main([*argv, "--steps", "50"]) == 0
    assert "default 50 steps" not in capsys.readouterr().err


async def test_engine_times_over_zeromq_are_rounded_as_over_http(engine):
    """Over HTTP queue_ms and run_ms come rounded to the microsecond; over ZeroMQ they were the engine's floats."""
    client = ZmqLoadClient(engine.client_address, RequestOptions(64, 64))
    try:
        records, _ = await asyncio.wait_for(
            run_load([Arrival(0.0), Arrival(0.01)], ["a red fox"], client, None, drain_s=20.0, progress=False), 30
        )
    finally:
        await client.close()
    assert all(r["n_images"] == 1 for r in records)
    for record in records:
        assert record["queue_ms"] == round(record["queue_ms"], 3) and record["run_ms"] == round(record["run_ms"], 3)
    assert any(record["run_ms"] != round(record["run_ms"]) for record in records)  # rounded, not to whole ms
