"""`argus profile latency` end to end: a real worker process (sim, then tiny) measured into a LatencyProfile file."""

import argparse
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from profile_in_progress import profile_in_its_first_batch

from controller.profile_latency import image_size
from controller.profiles import LatencyProfile
from engine.system.proc_reads import children_of
from engine_process import ROOT
from protocols.worker_messages import PROTOCOL_VERSION, Hello
from workers.config import usable_cpus
from workers.model_id import SIM_PROFILE, sim_model_id


def start_profile_latency(folder: Path, *options: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "controller.profile_latency", *options, "--out", str(folder / "profile.json")]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(profile: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = profile.communicate(timeout=240)
    finally:
        profile.kill()
    return subprocess.CompletedProcess(profile.args, profile.returncode, out, err)


def profile_latency(tmp_path, *options: str) -> subprocess.CompletedProcess:
    return finished(start_profile_latency(tmp_path, *options))


TINY_PROFILES = {
    "few_steps": ("--steps", "6", "--batches", "1,2", "--repeats", "1", "--threads", "1"),
    "cpu_clock": ("--clock", "cpu", "--threads", "1", "--steps", "4", "--batches", "1", "--repeats", "1"),
}


@pytest.fixture(scope="module", autouse=True)
def tiny_profiles(tmp_path_factory) -> dict[str, tuple[subprocess.Popen, Path]]:
    """The profiles of a tiny worker, each run and its folder, started side by side with the module (autouse): each
    spends seconds importing torch, in the command and in its worker, while the other and the sim tests run."""
    started = {}
    for name, options in TINY_PROFILES.items():
        folder = tmp_path_factory.mktemp(name)
        started[name] = start_profile_latency(folder, "--backend", "tiny", *options), folder
    yield started
    for profile, _ in started.values():
        profile.kill()
        profile.wait()


def assert_complete(profile: LatencyProfile, levels: tuple[int, ...], max_batch: int) -> None:
    assert profile.levels == levels and profile.max_batch == max_batch
    for level in levels:
        for batch in range(1, max_batch + 1):
            assert profile.latency(level, batch) > 0


def test_sim_backend_at_a_tiny_time_scale(tmp_path):
    done = profile_latency(tmp_path, "--backend", "sim", "--time-scale", "0.001", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    profile = LatencyProfile.load(tmp_path / "profile.json")
    assert_complete(profile, (0, 5, 10, 15, 20, 25), 4)  # batches 1,2,4 by default; 3 is interpolated
    assert (profile.name, profile.steps) == ("sim", 50)
    assert "SIMULATED" in profile.provenance and "batch sizes [3] not measured" in profile.provenance
    assert profile.time_scale == 0.001  # a sim engine at another time scale plans with it scaled (test_control_setup)
    # the model it was measured on: an engine serving another warns of it (test_control_setup)
    assert profile.model == sim_model_id(LatencyProfile.bundled(SIM_PROFILE))
    assert "argus serve --latency-profile" not in done.stderr  # every cache level measured: nothing to warn of


def test_tiny_backend_at_few_steps(tiny_profiles):
    started, folder = tiny_profiles["few_steps"]
    done = finished(started)
    assert done.returncode == 0, done.stderr
    profile = LatencyProfile.load(folder / "profile.json")
    assert_complete(profile, (0, 5), 2)  # at N=6 the worker caches only level 5
    assert (profile.name, profile.steps) == ("tiny_cpu", 6)
    assert "torch 2." in profile.provenance and "(1 torch thread)" in profile.provenance
    assert profile.time_scale == 1.0
    assert profile.model.startswith("tiny:")
    # said before measuring: argus serve refuses a profile without every cache level
    assert "no latencies for levels [10, 15, 20, 25] (N=6, levels [0, 5]): argus serve --latency-profile" in done.stderr


def test_levels_the_worker_has_no_latents_for_are_refused(tmp_path):
    done = profile_latency(tmp_path, "--backend", "sim", "--time-scale", "0.001", "--levels", "0,7")
    assert done.returncode != 0
    assert "levels [7]" in done.stderr
    assert not (tmp_path / "profile.json").exists()


def test_a_sim_profile_of_no_simulated_time_is_refused(tmp_path):
    command = [sys.executable, "-m", "engine.cli", "profile", "latency", "--backend", "sim", "--time-scale", "0"]
    done = subprocess.run([*command, "--out", str(tmp_path / "p.json")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "--time-scale 0 simulates no GPU time" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(usable_cpus() < 2, reason="--threads 2 needs 2 CPUs to be taken")
def test_the_cpu_clock_of_several_threads_is_refused_before_the_worker_starts(tmp_path):
    # each thread's CPU seconds were added up: the profile said a batch took up to --threads times what it took, and
    # the default is half the CPUs (4 threads on a host of 8)
    command = [sys.executable, "-m", "engine.cli", "profile", "latency", "--backend", "tiny", "--clock", "cpu"]
    command += ["--threads", "2", "--out", str(tmp_path / "profile.json")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 2, done.stderr
    assert "--clock cpu adds up the CPU seconds of the worker's 2 torch threads" in done.stderr
    assert "Traceback" not in done.stderr and "warming up" not in done.stdout
    assert not (tmp_path / "profile.json").exists()


def test_the_cpu_clock_of_one_thread_is_a_profile(tiny_profiles):
    started, folder = tiny_profiles["cpu_clock"]
    done = finished(started)
    assert done.returncode == 0, done.stderr
    profile = LatencyProfile.load(folder / "profile.json")
    assert_complete(profile, (0,), 1)
    assert "CPU seconds the worker process used per batch" in profile.provenance


def _sim_profile(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "engine.cli", "profile", "latency", "--backend", "sim", "--time-scale", "0.001"]
    command += [*flags, "--out", str(tmp_path / "profile.json")]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_a_size_the_worker_refuses_is_a_usage_error(tmp_path):
    # sent as it was, the first batch failed and the command ended in a RuntimeError traceback
    done = _sim_profile(tmp_path, "--size", "100")
    assert done.returncode == 2, done.stderr
    assert "--size 100: this sim worker takes a multiple of 8 from 64 to 2048" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_batch_over_what_a_worker_runs_is_refused_by_its_flag(tmp_path):
    # sent on as the worker's --max-batch, which it refused: the profile ended in a traceback of the worker's usage
    done = _sim_profile(tmp_path, "--batches", "1,33")
    assert done.returncode == 2, done.stderr
    says = "argument --batches: expected a number from 1 to 32 images (what the wire carries), not '33'"
    assert f"argus profile latency: error: {says}" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "profile.json").exists()


@pytest.mark.timeout(120)
def test_sigterm_stops_the_worker_and_removes_the_temporary_folder(tmp_path):
    """SIGTERM (a timeout, a cancelled job) ended the profile where it stood: its temporary folder was left behind."""
    with profile_in_its_first_batch(tmp_path, "engine.cli") as (profile, scratch):
        workers = children_of(profile.pid)
        assert workers
        profile.send_signal(signal.SIGTERM)
        assert profile.wait(60) == 128 + signal.SIGTERM, (tmp_path / "profile.out").read_text()
        assert list(scratch.iterdir()) == []
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
        assert not (tmp_path / "profile.json").exists()


def test_a_profile_that_cannot_be_written_is_one_line_after_the_measurements(tmp_path):
    """Checked writable as the run began, the file may not be by its end (a full disk here; a folder gone): that was
    an OSError traceback, after the measurements, which were not printed."""
    command = [sys.executable, "-m", "engine.cli", "profile", "latency", "--backend", "sim", "--time-scale", "0.001"]
    command += ["--repeats", "1", "--levels", "10", "--batches", "1", "--out", "/dev/full"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    said = "argus profile latency: could not write the latency profile to /dev/full: No space left on device\n"
    assert done.stderr.endswith(said), done.stderr
    assert "batch" in done.stdout and "written to" not in done.stdout


def test_the_module_run_as_a_script_says_a_usage_error_as_the_command_does(tmp_path):
    # `python -m controller.profile_latency` had a parser of its own: a usage error was a traceback, exit 1
    done = profile_latency(tmp_path, "--backend", "sim", "--batches", "2,4")
    assert done.returncode == 2, done.stderr
    said = "argus profile latency: error: --batches must include 1 (a profile covers batch 1 up): [2, 4]\n"
    assert done.stderr == said


def test_a_profile_without_size_runs_the_workers_default_size():
    """Not its largest: an SD-XL worker's 1536 (2.25 times the pixels of its 1024) would time another image."""
    hello = Hello(PROTOCOL_VERSION, "w", "sdxl", "sdxl:0", "cuda:0", False, [5], 4, 50, 512, 1536, 1024, 0, 1)
    assert image_size(argparse.Namespace(size=None, steps=50), hello) == 1024
