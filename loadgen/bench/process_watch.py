"""Watching the engine's process from outside: memory, liveness, and /metrics against what clients saw."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from loadgen.bench.harness import local_workers_of


# -- processes: memory, liveness, metrics ---------------------------------------------------------
def status_kb(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) from /proc/PID/stat; None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def process_running(pid: int) -> bool:
    """pid is a live process: there, and not a zombie that ended and waits to be reaped."""
    state = process_state(pid)
    return state is not None and state[0] != "Z"


def alive_child(pid: int, parent: int) -> bool:
    """pid is a live (not zombie) child of parent: never signal a recycled pid."""
    state = process_state(pid)
    return state is not None and state[0] != "Z" and state[1] == parent


class RssSampler:
    """Samples the engine's VmRSS (and its workers') every `every_s` until stopped."""

    def __init__(self, engine_pid: int, every_s: float = 0.5):
        self.engine_pid = engine_pid
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, engine RSS MB)
        self.worker_peak_mb = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        import asyncio

        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        import asyncio

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
        import asyncio

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
