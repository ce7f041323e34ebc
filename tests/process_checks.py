"""What tests ask of the processes they started: whether one still runs, which is an engine's MILP process, and
which are left in an engine's session."""

import os

from engine.system.proc_reads import children_of, live_parent, read_command, stat_fields


def process_running(pid: int) -> bool:
    """pid is a live process: there, and not a zombie that ended and waits to be reaped."""
    return live_parent(pid) is not None


def milp_processes_of(engine_pid: int) -> list[int]:
    """The process the engine solves its allocation MILP in (one, once the first plan is asked for; none before)."""
    return [child for child in children_of(engine_pid) if "engine.control.milp_process" in read_command(child)]


def left_in_session(session: int) -> dict[int, str]:
    """The live processes (zombies aside) in a session, by pid, with their command lines. For an engine started in a
    session of its own (start_engine's): every process it or its children started that did not call setsid (Ray's
    workers take a process group of their own, not a session), wherever it was reparented."""
    left = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        fields = stat_fields(entry)
        if fields is not None and fields[0] != "Z" and int(fields[3]) == session:  # None: it ended meanwhile
            left[int(entry)] = read_command(int(entry)).replace("\0", " ")
    return left
