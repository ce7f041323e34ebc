"""Watching the engine's process from outside: its memory over a run, and its /metrics against what clients saw."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from engine.system.proc_reads import local_workers_of, status_kb


class RssSampler:
    """Samples the engine's VmRSS (and its workers') every `every_s` until stopped."""

    def __init__(self, engine_pid: int, every_s: float = 0.5):
        self.engine_pid = engine_pid
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, engine RSS MB)
        self.worker_peak_mb = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        started = time.perf_counter()
        while True:
            self.sample(time.perf_counter() - started)
            await asyncio.sleep(self.every_s)

    def sample(self, at: float) -> None:
        rss = status_kb(self.engine_pid, "VmRSS")
        if rss is not None:
            self.samples.append((round(at, 2), rss / 1024.0))
        for pid in local_workers_of(self.engine_pid):
            peak = status_kb(pid, "VmHWM")
            if peak is not None:
                self.worker_peak_mb = max(self.worker_peak_mb, peak / 1024.0)

    def engine_peak_mb(self) -> float | None:
        peak = status_kb(self.engine_pid, "VmHWM")
        return None if peak is None else peak / 1024.0

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text -> {sample name: {"label=value,...": value}} (labels sorted; "" when none)."""
    found: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        name, _, labels = sample.partition("{")
        key = ",".join(sorted(x.replace('"', "") for x in labels.rstrip("}").split(",") if x))
        found.setdefault(name, {})[key] = float(value)
    return found


def metrics_vs_clients(metrics: dict[str, dict[str, float]], summary: dict) -> dict[str, Any]:
    """argus_requests_total by outcome beside what the clients saw; `match` when they agree."""
    requests = metrics.get("argus_requests_total", {})
    engine: Counter[str] = Counter()
    engine_errors: Counter[str] = Counter()
    for labels, value in requests.items():
        if not value:  # the engine shows each outcome and code it answers at 0 from the start
            continue
        fields = dict(part.split("=", 1) for part in labels.split(",") if "=" in part)
        outcome = fields.get("outcome", "")
        engine[outcome] += int(value)
        if outcome in ("error", "rejected"):
            engine_errors[fields.get("code", "")] += int(value)
    clients = summary["outcomes"]
    seen = {
        "ok": clients.get("images", 0),
        "busy": clients.get("busy", 0),
        "error": sum(summary["errors"].values()),
        "cancelled": clients.get("cancelled", 0),
    }
    got = {
        "ok": engine["ok"],
        "busy": engine["busy"],
        "error": engine["error"] + engine["rejected"],
        "cancelled": engine["cancelled"],
    }
    return {
        "engine": got,
        "clients": seen,
        "engine_errors": dict(engine_errors),
        "client_errors": summary["errors"],
        "match": got == seen and dict(engine_errors) == {k: v for k, v in summary["errors"].items() if v},
    }
