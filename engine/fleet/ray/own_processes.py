"""The processes of the engine's own Ray instance, so that none outlives the engine's stop
(engine/fleet/ray/launcher.py).

Ray starts the instance's GCS, raylet and monitors as the engine's children; the raylet starts its agents
(ray::DashboardAgent, ray::RuntimeEnvAgent) and the actors' workers. An agent whose raylet ends while the GCS is gone
(a stop while the instance still started, whose processes die with the engine; a stop after the GCS went) waits on
that GCS to report the raylet's end: both agents were left running a minute or more after the engine had stopped.
The processes are listed before `ray.shutdown` (an agent orphaned by it is no longer the engine's descendant) and those
left after it are killed.
"""

from __future__ import annotations

import os
import signal

from engine.system.proc_reads import read_command, stat_fields

# a process by its pid and its start time (/proc/PID/stat's 22nd field): a pid recycled meanwhile is not it
Process = tuple[int, str]


def _live_processes() -> dict[int, tuple[int, str]]:
    """Every live (not zombie) process's pid: (its parent's pid, its start time)."""
    processes = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        fields = stat_fields(entry)
        if fields is not None and fields[0] != "Z":  # None: it ended meanwhile
            processes[int(entry)] = (int(fields[1]), fields[19])
    return processes


def own_ray_processes(ray_folder: str) -> list[Process]:
    """This process's children whose command runs something of Ray's package folder (the GCS, the raylet, the
    monitors; not the engine's MILP process), and all their descendants."""
    processes = _live_processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    found = [pid for pid in children.get(os.getpid(), []) if ray_folder in read_command(pid)]
    for pid in found:  # grows as it goes: each one's children are looked at in turn
        found.extend(children.get(pid, []))
    return [(pid, processes[pid][1]) for pid in found]


def kill_left(listed: list[Process]) -> None:
    """SIGKILLs those of `listed` still running."""
    processes = _live_processes()
    for pid, started in listed:
        if pid in processes and processes[pid][1] == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended meanwhile
                pass
