"""Short replays against a real engine with tiny workers (guarded by an API key), over HTTP
(through the CLI) and ZeroMQ."""

import asyncio
import json
from pathlib import Path

import pytest
from pictures import opens_as_png

from engine_process import start_engine
from loadgen import cli
from loadgen.arrivals import Arrival, gamma
from loadgen.clients import HttpLoadClient, RequestOptions, ZmqLoadClient
from loadgen.plot import timeline_plot
from loadgen.prompts import load_prompts
from loadgen.records import OUTCOMES
from loadgen.report import read_records, write_records, write_summary
from loadgen.run import run_load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
API_KEY = "loadgen-test-key"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("loadgen"), backend="tiny", api_key=API_KEY)
    yield engine
    assert engine.stop() == 0


def assert_each_request_counted_once(records, summary, n):
    assert sorted(r["id"] for r in records) == list(range(n))
    assert all(r["outcome"] in OUTCOMES for r in records)
    assert summary["sent"] == n == sum(summary["outcomes"].values())
    for name in OUTCOMES:
        assert summary["outcomes"][name] == sum(1 for r in records if r["outcome"] == name)


@pytest.mark.timeout(90)
def test_http_trace_replay_through_the_cli(engine, tmp_path, capsys):
    out = {name: tmp_path / name for name in ("records.jsonl", "summary.json", "timeline.png")}
    # the conversational trace thinned so its busiest minute offers 2 x a stated capacity of 3/s, 10x faster:
    # its first 6 requests, scheduled over 0.8 s (the tiny workers' time to serve them is most of the run)
    code = cli.main([
        "--url", engine.http, "--api-key", API_KEY,
        "--trace", str(DATA / "traces" / "azure_llm2023_conv.csv"),
        "--load", "2", "--capacity-rps", "3", "--time-scale", "0.1", "--max-requests", "6",
        "--prompts", str(DATA / "prompts" / "partiprompts.tsv"),
        "--size", "64x64", "--steps", "4", "--slo-ms", "30000", "--seed", "3", "--drain-s", "40",
        "--records", str(out["records.jsonl"]), "--json", str(out["summary.json"]),
        "--plot", str(out["timeline.png"]), "--sample-every-s", "0.5", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    records = read_records(out["records.jsonl"])
    summary = json.loads(out["summary.json"].read_text())
    assert_each_request_counted_once(records, summary, 6)
    assert summary["outcomes"]["ok"] + summary["outcomes"]["late"] == 6
    assert all(r["status"] == 200 and r["n_images"] == 1 and r["level"] == 0 for r in records)
    assert all(r["worker"].startswith("local-") and r["run_ms"] > 0 and r["simulated"] is False for r in records)
    assert summary["simulated"] is False
    # a real backend reports no quality of its own: the engine's estimate is what the run says, exact images whole
    assert all(r["quality"] is None and r["estimated_quality"] == 100.0 for r in records)
    assert summary["mean_quality_pct"] is None and summary["mean_estimated_quality_pct"] == 100.0
    assert [r["prompt_index"] for r in records] == list(range(6))
    assert summary["level_mix"] == {"0": 1.0} and summary["cache_hit_rate"] == 0.0
    # workers per level come from the controller's plan (GET /plan)
    assert summary["worker_levels_source"] == "plan" and summary["worker_levels"]
    # the plan covers both workers (an early sample may predate the second one's arrival)
    assert sum(summary["worker_levels"][-1][1].values()) == 2
    assert opens_as_png(out["timeline.png"])
    assert "SLO violations" in capsys.readouterr().out


async def test_zmq_bursty_replay_through_run_load(engine, tmp_path):
    prompts = load_prompts(DATA / "prompts" / "drawbench.json")
    schedule = gamma(8.0, 2.0, seed=11, max_requests=12)  # over 1.4 s
    client = ZmqLoadClient(engine.client_address, RequestOptions(64, 64, steps=4))
    try:
        # a tight SLO, so some answers may be late or past their deadline; all must still be counted
        records, summary = await asyncio.wait_for(
            run_load(schedule, prompts, client, 400.0, seed=1, drain_s=40.0, status_url=engine.http,
                     api_key=API_KEY, progress=False),
            60,
        )  # fmt: skip
    finally:
        await client.close()
    assert_each_request_counted_once(records, summary, 12)
    assert summary["outcomes"]["error"] == summary["outcomes"]["cancelled"] == 0
    assert summary["worker_levels_source"] == "plan"  # /plan polled with the API key
    for r in records:
        assert r["status"] is None
        if r["outcome"] in ("ok", "late"):
            assert r["n_images"] == 1 and r["level"] == 0 and r["latency_ms"] > 0
            assert r["estimated_quality"] == 100.0
        if r["outcome"] == "deadline_exceeded":
            assert r["code"] == "deadline_exceeded"
    write_records(records, tmp_path / "r.jsonl")
    write_summary(summary, tmp_path / "s.json")
    await asyncio.to_thread(
        timeline_plot, records, tmp_path / "t.png", worker_levels=summary["worker_levels"], title="zmq"
    )
    assert read_records(tmp_path / "r.jsonl") == records
    assert json.loads((tmp_path / "s.json").read_text()) == summary
    assert opens_as_png(tmp_path / "t.png")


def test_load_is_a_multiple_of_the_capacity_the_engine_reports(engine, tmp_path, capsys):
    """And the run says which capacity, of how many workers: against an engine that answers ready with one of
    several workers loaded, --load was sized for that one alone, without a word."""
    summary_path = tmp_path / "s.json"
    code = cli.main(
        ["--url", engine.http, "--api-key", API_KEY, "--load", "1.0", "--max-requests", "3", "--no-progress",
         "--size", "64x64", "--steps", "4", "--json", str(summary_path)]
    )  # fmt: skip
    assert code == 0
    assert json.loads(summary_path.read_text())["sent"] == 3
    capacity = engine.ready()["exact_capacity_rps"]
    said = f"--load 1 x {capacity:.3g} requests/s: the exact capacity of the 2 workers ready at {engine.http}"
    assert said in capsys.readouterr().err


def test_no_progress_bar_is_redrawn_into_stderr_that_is_not_a_terminal(engine, capsys):
    """A run logged to a file had its bar redrawn into it, a few hundred bytes a second, unless --no-progress."""
    code = cli.main(
        ["--url", engine.http, "--api-key", API_KEY, "--rate", "1", "--max-requests", "1", "--size", "64x64",
         "--steps", "2"]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "sending 1 request" in err
    assert "answered" not in err and "req/s" not in err


def test_a_size_the_engine_does_not_take_is_refused_before_the_run(engine, capsys):
    """Against a tiny engine (sides 64 to 256), --size 1024x1024 sent the whole run, every request refused
    invalid_size, exit 0: /ready did not say which sizes the engine takes."""
    assert engine.ready()["sizes"] == {"min": 64, "max": 256, "default": 64, "multiple": 8}
    assert engine.ready()["steps"] == {"default": 50, "max": 200, "refused": []}
    # the engine counts an image size it refuses as rejected (an input refusal), never as its own error
    refused = engine.metric("argus_requests_total", outcome="rejected", code="invalid_size")
    code = cli.main(
        ["--url", engine.http, "--api-key", API_KEY, "--rate", "5", "--max-requests", "3", "--no-progress",
         "--size", "1024x1024"]
    )  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err == (
        "argus loadgen: error: --size 1024x1024: the engine takes sides that are a multiple of 8 from 64 to 256"
        f" (GET {engine.http}/ready): every request would be refused\n"
    )
    assert engine.metric("argus_requests_total", outcome="rejected", code="invalid_size") == refused  # none sent


@pytest.mark.parametrize(
    ("key", "error"),
    [
        (["--api-key", "not-" + API_KEY], "refuses the API key (--api-key or $ARGUS_API_KEY)"),
        # it said the engine refused the API key when none was sent
        ([], "requires an API key and none was given: pass --api-key or set $ARGUS_API_KEY"),
    ],
)
def test_a_run_with_a_key_the_engine_refuses_is_refused_before_it_starts(engine, capsys, monkeypatch, key, error):
    """It ran its whole schedule, each request a 401, and reported 100% violations, exit 0."""
    monkeypatch.delenv("ARGUS_API_KEY", raising=False)
    code = cli.main(["--url", engine.http, *key, "--rate", "1", "--max-requests", "3", "--no-progress"])
    assert code == 2
    assert capsys.readouterr().err == f"argus loadgen: error: the engine at {engine.http} {error}\n"


async def test_http_without_the_api_key_is_refused_and_counted(engine):
    client = HttpLoadClient(engine.http, RequestOptions(64, 64, steps=4))
    try:
        records, summary = await asyncio.wait_for(
            run_load([Arrival(0.0), Arrival(0.1)], ["a red fox"], client, None, drain_s=20.0, progress=False), 30
        )
    finally:
        await client.close()
    assert_each_request_counted_once(records, summary, 2)
    assert [(r["outcome"], r["status"], r["code"]) for r in records] == [("error", 401, "unauthorized")] * 2
