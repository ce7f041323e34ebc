"""Which processes an engine with a Ray instance of its own ends at its stop (engine/fleet/ray/own_processes.py): its
children that run something of Ray's package folder and all their descendants; never its other children (the MILP
process), nor another engine's Ray instance on the machine, nor a process whose pid was taken since it was listed."""

import os
import signal
import subprocess
import sys

from waiting import wait_for

from engine.fleet.ray.own_processes import kill_left, own_ray_processes
from engine.system.proc_reads import children_of, stat_fields

# a process named by its first argument that runs the command in the others
_RUNS = "import subprocess, sys; subprocess.run(sys.argv[2:])"


def _child(*command: str, **options) -> subprocess.Popen:
    return subprocess.Popen(list(command), stdin=subprocess.DEVNULL, **options)


def test_the_children_running_rays_folder_are_listed_with_their_descendants_and_no_other_process(tmp_path):
    raylet = f"{tmp_path}/ray/raylet"  # a stand-in: a command that names a file of the folder
    ours = _child(sys.executable, "-c", _RUNS, raylet, "sleep", "60")  # and starts an agent of its own
    milp = _child("sleep", "60")
    # another engine's instance on the machine: its raylet is no child of ours, only of a child's (the shell's)
    another = _child("sh", "-c", '"$0" -c "$1" "$RAYLET" sleep 60; true', sys.executable, _RUNS, env={"RAYLET": raylet})
    started = [ours, milp, another]
    try:
        assert wait_for(lambda: children_of(ours.pid) and any(map(children_of, children_of(another.pid))))
        listed = sorted(pid for pid, _ in own_ray_processes(f"{tmp_path}/ray/"))
        assert listed == sorted([ours.pid, *children_of(ours.pid)])
    finally:
        for process in started:
            _kill_with_descendants(process.pid)
            process.wait()


def _kill_with_descendants(pid: int) -> None:
    for child in children_of(pid):
        _kill_with_descendants(child)
    os.kill(pid, signal.SIGKILL)


def test_a_process_listed_is_killed_unless_its_pid_was_taken_since():
    process = _child("sleep", "60")
    try:
        started = stat_fields(process.pid)[19]
        kill_left([(process.pid, str(int(started) + 1))])  # another process's start time: not the one listed
        process.terminate()  # what ends it, if nothing did before
        assert process.wait(timeout=10) == -signal.SIGTERM
        process = _child("sleep", "60")
        kill_left([(process.pid, stat_fields(process.pid)[19])])
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait()
