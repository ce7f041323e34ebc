"""What /proc says of processes and of the machine: CPU time, memory, parents and children, command lines."""

from __future__ import annotations

import math
import os
from pathlib import Path

# a process's flag, in /proc/PID/stat, once it has begun to exit (the kernel's PF_EXITING)
_PF_EXITING = 0x4


def stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (which may hold spaces and parentheses, so the split is at the
    last ')'): [0] the state letter, [1] the parent's pid, [3] the session, [6] the kernel's flags, [11] and [12] utime
    and stime, [19] the start time. None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def live_parent(pid: int) -> int | None:
    """The parent of pid while pid is a live process; None once it is gone, or a zombie that ended and waits to be
    reaped."""
    fields = stat_fields(pid)
    return None if fields is None or fields[0] == "Z" else int(fields[1])


def ending(pid: int) -> bool:
    """Whether our child `pid` has begun to exit, or ended, reaped or not. A process killed from outside closes its
    connections as it exits, before it is a zombie for its parent to reap (the kernel closes its files first): found
    gone by that, it is ending by itself. False where there is no /proc to tell (not Linux)."""
    if not os.path.exists("/proc/self/stat"):
        return False
    fields = stat_fields(pid)
    return fields is None or fields[0] in "ZX" or int(fields[6]) & _PF_EXITING != 0


def alive_child(pid: int, parent: int) -> bool:
    """pid is a live (not zombie) child of parent: never signal a recycled pid."""
    return live_parent(pid) == parent


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is pid."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and alive_child(int(entry), pid)]


def read_command(pid: int) -> str:
    """A process's command line, its arguments separated by NUL ("" once it has ended)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().decode(errors="replace")
    except OSError:  # it ended meanwhile
        return ""


def local_workers_of(engine_pid: int) -> list[int]:
    """The engine's local workers among its children; it also starts its MILP process
    (engine/control/milp_process.py)."""
    return [child for child in children_of(engine_pid) if "\0worker\0" in read_command(child)]


def process_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process, utime + stime of every thread it ever ran, ended ones too
    (/proc/PID/stat fields 14 and 15; summing the live threads would miss a thread pool's that ended); 0 if
    the process is gone."""
    fields = stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def machine_busy_s() -> float:
    """CPU seconds every core of this machine has spent busy since boot (/proc/stat: all but idle and iowait; guest
    time is already in user); NaN where there is no /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
