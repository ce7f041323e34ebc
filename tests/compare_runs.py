"""Stand-ins for `argus bench compare`'s runs, for the tests of what it makes of them (its table, its logs): the
summary a run returns, the trace and the command line it is given."""

from __future__ import annotations

from pathlib import Path

from loadgen.records import OUTCOMES

PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts" / "diffusiondb_5k.txt"


def run_summary(sent: int, refused_with: str | None = None) -> dict:
    """What loadgen's report says of a run that served every request, or refused each with the code `refused_with`."""
    refused = refused_with is not None
    return {
        "sent": sent,
        "outcomes": {**dict.fromkeys(OUTCOMES, 0), ("error" if refused else "ok"): sent},
        "error_codes": {refused_with: sent} if refused else {},
        "slo_violation_ratio": 1.0 if refused else 0.0,
        "mean_quality_pct": None if refused else 100.0,
        **dict.fromkeys(("latency_p50_ms", "latency_p99_ms"), None if refused else 1.0),
        **dict.fromkeys(("throughput_rps", "goodput_rps"), 0.0 if refused else 1.0),
        "level_mix": {} if refused else {"0": 1.0},
        "cache_hit_rate": None if refused else 0.0,
        "max_send_lag_ms": 1.0,
    }


def compare_argv(tmp_path: Path) -> list[str]:
    """argus and clipper-ht compared on a trace of 30 arrivals 2 s apart, written in `tmp_path`."""
    trace = tmp_path / "trace.txt"
    trace.write_text("".join(f"{i * 2000}\n" for i in range(30)))
    return ["bench", "compare", "--policies", "argus,clipper-ht", "--trace", str(trace), "--prompts", str(PROMPTS)]
