"""What tests ask of the processes they started: whether one still runs, and which is an engine's MILP process."""

from loadgen.bench.proc import children_of, live_parent, read_command


def process_running(pid: int) -> bool:
    """pid is a live process: there, and not a zombie that ended and waits to be reaped."""
    return live_parent(pid) is not None


def milp_processes_of(engine_pid: int) -> list[int]:
    """The process the engine solves its allocation MILP in (one, once the first plan is asked for; none before)."""
    return [child for child in children_of(engine_pid) if "engine.milp_process" in read_command(child)]
