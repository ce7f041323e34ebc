"""`argus bench compare` without --log-dir leaves no directory of engine logs behind."""

import tempfile
from pathlib import Path

from engine.cli import build_parser
from loadgen.bench import compare_bench

PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts" / "diffusiondb_5k.txt"


def test_the_engine_logs_go_with_the_run(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    trace = tmp_path / "trace.txt"
    trace.write_text("".join(f"{i * 2000}\n" for i in range(30)))
    log_dirs = []

    async def one_policy(policy, args, schedule, prompts, width, height, log_dir):
        assert log_dir.is_dir()
        log_dirs.append(log_dir)
        summary = {
            "sent": len(schedule),
            "slo_violation_ratio": 0.0,
            "mean_quality_pct": 100.0,
            **dict.fromkeys(("throughput_rps", "goodput_rps", "latency_p50_ms", "latency_p99_ms"), 1.0),
            "outcomes": {"ok": len(schedule)},
            "level_mix": {"0": 1.0},
            "cache_hit_rate": 0.0,
            "max_send_lag_ms": 1.0,
        }
        return [], summary

    monkeypatch.setattr(compare_bench, "_one_policy", one_policy)
    args = build_parser().parse_args(
        ["bench", "compare", "--policies", "argus,clipper-ht", "--trace", str(trace), "--prompts", str(PROMPTS)]
    )
    assert compare_bench.run(args) == 0
    assert len(log_dirs) == 2 and log_dirs[0].parent == scratch
    assert list(scratch.iterdir()) == []
