"""`argus bench compare`'s table and JSON show the requests that got no image, and why; a figure with nothing to take
it over is n/a. A run whose every request was refused showed a row of None."""

import json
from pathlib import Path

from engine.cli import build_parser
from loadgen.bench import compare_bench
from loadgen.records import OUTCOMES

PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts" / "diffusiondb_5k.txt"


def test_requests_without_an_image_are_counted_and_their_codes_said(tmp_path, monkeypatch, capsys):
    trace = tmp_path / "trace.txt"
    trace.write_text("".join(f"{i * 2000}\n" for i in range(30)))

    async def one_policy(policy, args, schedule, prompts, width, height, log_dir):
        refused = policy == "clipper-ht"
        summary = {
            "sent": len(schedule),
            "outcomes": {**dict.fromkeys(OUTCOMES, 0), ("error" if refused else "ok"): len(schedule)},
            "error_codes": {"invalid_size": len(schedule)} if refused else {},
            "slo_violation_ratio": 1.0 if refused else 0.0,
            "mean_quality_pct": None if refused else 100.0,
            **dict.fromkeys(("latency_p50_ms", "latency_p99_ms"), None if refused else 1.0),
            **dict.fromkeys(("throughput_rps", "goodput_rps"), 0.0 if refused else 1.0),
            "level_mix": {} if refused else {"0": 1.0},
            "cache_hit_rate": None if refused else 0.0,
            "max_send_lag_ms": 1.0,
        }
        return [], summary

    monkeypatch.setattr(compare_bench, "_one_policy", one_policy)
    argv = ["bench", "compare", "--policies", "argus,clipper-ht", "--trace", str(trace), "--prompts", str(PROMPTS)]
    args = build_parser().parse_args([*argv, "--json", str(tmp_path / "compare.json")])
    assert compare_bench.run(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("policy "))
    header, _, argus_row, refused_row = lines[at : at + 4]
    assert header.split()[1:3] == ["requests", "no_image"]
    requests = int(argus_row.split()[1])
    assert argus_row.split()[1:3] == [str(requests), "0"]
    assert refused_row.split()[1:3] == [str(requests), str(requests)]
    assert "None" not in out and "n/a" in refused_row
    assert f"clipper-ht: {requests} requests without an image: invalid_size {requests}" in out
    results = json.loads((tmp_path / "compare.json").read_text())["policies"]
    assert results["clipper-ht"]["no_image"] == requests and results["argus"]["no_image"] == 0
    assert results["clipper-ht"]["error_codes"] == {"invalid_size": requests}
