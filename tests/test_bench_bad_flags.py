"""A benchmark's bad flag is a one-line error and exit 2 before anything starts, not a traceback (or a worker
started, a pipeline built and an engine run, to fail then)."""

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main
from engine.commands.arg_types import UsageError
from engine_process import ROOT
from loadgen.bench import checkpoint_bench, engine_bench

_MAX_SEED = "9,223,372,036,854,775,807 (as the engine takes)"


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's own refusals
        return stop.code


@pytest.mark.parametrize(
    "flags",
    [
        ["--levels", "ten"],
        ["--levels", "10,0"],
        ["--levels", "30"],  # the worker keeps latents at 5 to 25 only
        ["--steps", "0"],
        ["--steps", "20"],  # below the default level 25
        ["--repeats", "0"],
        ["--size", "60"],
        ["--size", "512"],
        ["--threads", "0"],
        ["--warmup", "-1"],
        ["--warmup", "0"],  # one round is always run (its K=0 run gives the latents): it ran one without a word
        ["--guidance", "nan"],  # it ran, every image from NaN
        ["--guidance", "-1"],
        # past the engine's bounds: sent to the worker once its model was built, each a traceback
        ["--steps", "99999999999", "--levels", "10"],  # the worker's MemoryError
        ["--seed", "99999999999999999999"],  # past 2**64, which msgpack cannot encode
    ],
)
def test_worker_bench(flags, capsys):
    assert _exit_code(["bench", "worker", *flags]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flag", "value", "bound"),
    [
        ("--steps", "201", "from 1 to 200 (as the engine takes)"),
        ("--seed", "9223372036854775808", f"from 0 to {_MAX_SEED}"),
    ],
)
def test_worker_bench_past_the_engines_bounds(flag, value, bound, capsys):
    assert _exit_code(["bench", "worker", flag, value]) == 2
    assert f"argument {flag}: expected a number {bound}, not '{value}'" in capsys.readouterr().err


@pytest.mark.parametrize(("bench", "flag"), [("worker", "--repeats"), ("worker", "--warmup"), ("engine", "--rounds")])
def test_rounds_past_a_thousand(bench, flag, monkeypatch, capsys):
    """Taken, they ran rounds of a worker and diffusers, or of an engine and bare servers, until stopped."""
    from loadgen.bench import worker_bench

    def run_anyway(*_, **__):
        raise AssertionError("the bench ran")

    monkeypatch.setattr(worker_bench, "_measure", run_anyway)
    monkeypatch.setattr(engine_bench, "start_engine", run_anyway)
    assert _exit_code(["bench", bench, flag, "99999999999"]) == 2
    why = "a thousand: more is a mistyped number, not a measurement"
    assert f"argument {flag}: expected a number from 1 to 1,000 ({why}), not '99999999999'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags",
    [
        ["--time-scale", "0"],
        ["--workers", "0"],
        ["--load", "0"],
        ["--duration", "0"],
        ["--heartbeat-timeout", "0"],
        ["--max-queue", "0"],
        ["--max-batch", "0"],
        ["--max-batch", "33"],  # more than the wire carries: the engine refused it only once started
        ["--heartbeat-timeout", "1"],  # below the engine's floor of two beats, likewise
        ["--drain", "-1"],
        ["--hang-share", "2"],
        ["--http-share", "-0.5"],
        # past the engine's bounds, which it refused once started
        ["--heartbeat-timeout", "2147484"],
        ["--max-queue", "9999999999"],
        ["--kill-every", "0"],  # no faults, yet the default --min-kills 10
        ["--duration", "99999999999"],  # its list of faults: a MemoryError traceback
        ["--load", "99999999999"],  # its arrivals, drawn once the engine was up: a ValueError traceback there
        ["--time-scale", "1e7"],  # past the engine's bound: its engine was started to refuse it, and exit 1
    ],
)
def test_chaos_bench(flags, capsys):
    assert _exit_code(["bench", "chaos", *flags]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--kill-every", "1e-300"], "--duration 75 s with --kill-every 1e-300 s gives 7.5e+301 faults, more than"),
        (["--duration", "30"], "--duration 30 s with --kill-every 4 s gives 7 faults, fewer than --min-kills 10"),
    ],
)
def test_chaos_bench_names_the_flags_that_plan_its_faults(flags, says, capsys):
    assert _exit_code(["bench", "chaos", *flags]) == 2
    assert f"argus bench chaos: error: {says}" in capsys.readouterr().err


def test_chaos_bench_as_a_module(capsys):
    from loadgen.bench.chaos_bench import main as chaos_main

    with pytest.raises(SystemExit) as stop:
        chaos_main(["--hang-share", "2"])
    assert stop.value.code == 2
    assert "argument --hang-share: expected a number from 0 to 1, not '2'" in capsys.readouterr().err


# slept on the wall clock: an OverflowError traceback (past time_t) once the engine and its fleets were up
@pytest.mark.parametrize(
    ("bench", "flag", "bound"),
    [
        ("scale", "--step-s", "above 0 and at most"),
        ("scale", "--half-s", "above 0 and at most"),
        ("scale", "--warmup-s", "from 0 to"),
        # taken: each ran, saying nothing, until stopped
        ("engine", "--duration-s", "above 0 and at most"),
        ("engine", "--latency-s", "above 0 and at most"),
        ("engine", "--warmup-s", "from 0 to"),
        ("checkpoint", "--duration", "above 0 and at most"),
        # refused for the faults it planned, in words that named no flag: "1e+11 s with a fault every 4 s gives ..."
        ("chaos", "--duration", "above 0 and at most"),
    ],
)
def test_a_measured_span_past_an_hour(bench, flag, bound, monkeypatch, capsys):
    def run_anyway(*_, **__):
        raise AssertionError("the bench ran")

    monkeypatch.setattr(engine_bench, "start_engine", run_anyway)
    monkeypatch.setattr(checkpoint_bench, "_check_room", run_anyway)
    assert _exit_code(["bench", bench, flag, "1e11"]) == 2
    err = capsys.readouterr().err
    why = "an hour: a longer one is a mistyped number, not a measurement"
    says = f"argument {flag}: expected a number {bound} 3,600 s ({why}), not '1e11'"
    assert says in err and "Traceback" not in err


def test_scale_bench_refuses_a_start_rate_too_low_to_measure(monkeypatch, capsys):
    """Under a request a step, none was due in the measured window: the engine, its thousand workers and the load ran,
    to fail saying the engine did not keep up with 0.2 req/s, and to lower --start-rps."""
    from loadgen.bench import scale_bench

    def run_anyway(*_):
        raise AssertionError("the bench ran")

    monkeypatch.setattr(scale_bench, "_measure", run_anyway)
    assert _exit_code(["bench", "scale", "--start-rps", "0.2", "--max-rps", "1"]) == 2
    assert (
        "argus bench scale: error: --start-rps 0.2 for --step-s 3 s over 2 load processes is 0.3 requests a load"
        " process in a measured step: at least 20 are needed to tell whether the engine kept up; raise --start-rps or"
        " --step-s, or lower --load-processes\n"
    ) == capsys.readouterr().err


def test_scale_bench_refuses_more_load_processes_than_the_cores_run(monkeypatch, capsys):
    """Unbounded, every step started as many as asked. On a machine of 2 cores, 4 a core; the bench is not run."""
    from loadgen.bench import scale_bench

    def run_anyway(*_):
        raise AssertionError("the bench ran")

    monkeypatch.setattr(scale_bench, "CORES", 2)
    monkeypatch.setattr(scale_bench, "_measure", run_anyway)
    assert _exit_code(["bench", "scale", "--load-processes", "9"]) == 2
    says = "argument --load-processes: expected a number from 1 to 8 (4 for each of this machine's 2 cores: more only"
    assert f"{says} take turns on them), not '9'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags", [["--workers", "8,x"], ["--workers", "0"], ["--workers", ","], ["--solves", "0"], ["--slo", "0"]]
)
def test_controller_bench(flags, capsys):
    assert _exit_code(["bench", "controller", *flags]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_controller_bench_refuses_a_time_limit_past_an_hour(monkeypatch, capsys):
    """Past OR-Tools' int64 it was an OverflowError traceback in the solving process, then a RuntimeError one in the
    bench's. Refused before the solving process starts."""
    from loadgen.bench import controller_bench

    def run_anyway(*_, **__):
        raise AssertionError("the solving process started")

    monkeypatch.setattr(controller_bench.subprocess, "Popen", run_anyway)
    assert _exit_code(["bench", "controller", "--time-limit-ms", "99999999999999999999"]) == 2
    says = "argument --time-limit-ms: expected a number from 1 to 3,600,000 ms (an hour: a longer one is a mistyped"
    assert f"{says} number), not '99999999999999999999'" in capsys.readouterr().err


PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts" / "diffusiondb_5k.txt"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--trace", "{tmp}/missing.csv"], "missing.csv: No such file"),
        (["--trace", "{tmp}/trace.txt", "--prompts", "{tmp}/missing.txt"], "missing.txt"),
        (["--trace", "{tmp}/one.txt"], "--load cannot rescale --trace {tmp}/one.txt: a mean rate needs at least two"),
        # 1.3 x 8 workers' capacity is 4 x the trace's 0.5/s: each arrival sent 4 times. It said '--trace T
        # (--duration-s 1.0): all arrivals are at the same instant'
        (
            ["--trace", "{tmp}/trace.txt", "--duration-s", "1"],
            "--duration-s 1 keeps 4 of the 120 arrivals, all at 0 s (simulated); a comparison needs two arrivals",
        ),
        # thinned to 0.255/s, a quarter of its own rate: none of 10 kept. It said '--trace T (--duration-s None): a
        # mean rate needs at least two arrivals'
        (
            ["--trace", "{tmp}/short.txt", "--workers", "1"],
            "--load 1.3 x 0.196 img/s (the exact capacity of 1 sim worker) thins --trace {tmp}/short.txt (10 arrivals"
            " at 1/s) to 0.255/s on its own clock: each arrival is kept with probability 0.25, and --seed 0 kept none;"
            " a comparison needs two arrivals, at different instants; a trace of 60 s or less is its own busiest"
            " minute, so --load sets its mean rate",
        ),
        (["--trace", "{tmp}/trace.txt", "--log-dir", "{tmp}/trace.txt"], "--log-dir"),
        # a prompt past the file's end raised run_load's ValueError as a traceback, once the first engine was up
        (
            ["--trace", "{tmp}/named.txt", "--prompts", "{tmp}/two.txt", "--log-dir", "{tmp}/logs"],
            "--trace {tmp}/named.txt: arrival 0 names prompt 7, but there are 2 prompts in --prompts {tmp}/two.txt",
        ),
        (["--trace", "{tmp}/trace.txt", "--records-dir", "{tmp}/trace.txt/records"], "--records-dir"),
    ],
)
def test_compare_bench_files(flags, says, tmp_path, capsys):
    (tmp_path / "trace.txt").write_text("".join(f"{i * 2000}\n" for i in range(30)))
    (tmp_path / "one.txt").write_text("0\n")
    (tmp_path / "short.txt").write_text("".join(f"{i * 1000}\n" for i in range(10)))
    (tmp_path / "named.txt").write_text("".join(f"{i * 2000},7\n" for i in range(30)))
    (tmp_path / "two.txt").write_text("a red fox\na blue whale\n")
    argv = ["bench", "compare", "--prompts", str(PROMPTS), *(f.format(tmp=tmp_path) for f in flags)]
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert says.format(tmp=tmp_path) in err and "Traceback" not in err and "None" not in err
    assert not list((tmp_path / "logs").glob("engine-*"))  # refused before any engine started


@pytest.mark.parametrize(
    "flags",
    [
        ["--entries", "1"],
        ["--entries", "0"],
        ["--lookups", "x"],
        ["--entries", "10", "--timed-inserts", "11"],
        ["--replay", "/nonexistent/prompts.txt"],
        ["--replay", "{not utf-8}"],
        ["--replay", "{prompts}", "--embedder", "bert"],
        ["--data", "/nonexistent", "--entries", "10", "--timed-inserts", "5", "--latents", "2", "--lookups", "2"],
        # no vector is at cosine 0.9 to another in one dimension: an AttributeError traceback once the index was built
        ["--vectors", "random", "--dim", "1", "--entries", "10", "--timed-inserts", "5", "--latents", "2"],
    ],
)
def test_cache_bench(flags, tmp_path, capsys):
    (tmp_path / "bytes.txt").write_bytes(b"\xff\xfe not text")
    (tmp_path / "prompts.txt").write_text("a red fox\na blue whale\n")
    named = {"{not utf-8}": str(tmp_path / "bytes.txt"), "{prompts}": str(tmp_path / "prompts.txt")}
    assert _exit_code(["bench", "cache", *(named.get(flag, flag) for flag in flags)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--latents", "9", "--entries", "2"], "--latents 9 x 131,072 bytes is more than this host's memory (1 MiB)"),
        (["--latents", "2", "--entries", "300"], "--entries 300 x 4,096 bytes is more than this host's memory (1 MiB)"),
    ],
)
def test_cache_bench_past_the_hosts_memory(flags, says, monkeypatch, capsys):
    """Held whole in memory: past the host's, the OOM killer ended the run (a MemoryError under a limit). A host of
    1 MiB stands in for one smaller than what is asked."""
    from loadgen.bench import cache_bench

    monkeypatch.setattr(cache_bench, "host_memory_bytes", lambda: 1 << 20, raising=False)
    small = ["--vectors", "random", "--lookups", "2", "--timed-inserts", "2"]
    assert _exit_code(["bench", "cache", *small, *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


@pytest.mark.parametrize("bench", ["engine", "scale"])
@pytest.mark.parametrize("size", ["65", "56", "4096"])  # sizes the sim engine answers invalid_size
def test_an_image_size_the_sim_engine_refuses(bench, size, capsys):
    assert _exit_code(["bench", bench, "--size", size]) == 2
    err = capsys.readouterr().err
    assert "argument --size: expected a multiple of 8 from 64 to 2048" in err and "Traceback" not in err


SMALL_CACHE_BENCH = ["--entries", "10", "--timed-inserts", "5", "--latents", "2", "--lookups", "2"]


@pytest.mark.parametrize(
    ("size", "says"),
    [
        # the sim engine answers these invalid_size: the whole bench ran, each request refused, and exited 0
        ("100x100", "expected sides that are a multiple of 8 from 64 to 2048, not '100x100'"),
        ("4096x4096", "expected sides that are a multiple of 8 from 64 to 2048, not '4096x4096'"),
        ("1024x56", "expected sides that are a multiple of 8 from 64 to 2048, not '1024x56'"),
        ("64", "expected auto or WIDTHxHEIGHT (1024x1024), not '64'"),
    ],
)
def test_a_compare_size_the_sim_engine_refuses(size, says, tmp_path, capsys):
    argv = ["bench", "compare", "--policies", "argus", "--workers", "1", "--size", size]
    assert _exit_code([*argv, "--log-dir", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err
    assert f"argument --size: {says}" in err and "Traceback" not in err
    assert not (tmp_path / "logs").exists()  # refused before any engine started


_SEEDED = ("chaos", "cache", "controller")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["bench", "compare", "--policies", "argus,foo"], "--policies takes distinct names"),
        # taken, and thinned the trace as --seed 1 does; numpy's generators take no negative seed
        (["bench", "compare", "--seed", "-1"], "argument --seed: expected a number >= 0, not '-1'"),
        # its engines' 10 s window of the simulated clock would be under the 0.01 s argus serve --window-s takes
        (
            ["bench", "compare", "--time-scale", "0.0005"],
            "argument --time-scale: expected a number from 0.001 to 1,000",
        ),
        # past the engines' bound: the first was started to refuse it, and the bench failed with exit 1
        (["bench", "compare", "--time-scale", "1e7"], "argument --time-scale: expected a number from 0.001 to 1,000"),
        (["loadgen", "--rate", "1", "--duration-s", "1", "--seed", "-1"], "argument --seed: expected a number >= 0"),
        # chaos started an engine, then died in numpy's ValueError; worker's is no image seed the engine takes; the
        # cache and controller benches' are refused as every other --seed is
        *[(["bench", bench, "--seed", "-1"], "argument --seed: expected a number >= 0") for bench in _SEEDED],
        (["bench", "worker", "--seed", "-1"], f"argument --seed: expected a number from 0 to {_MAX_SEED}, not '-1'"),
        # an output named as an input was written over it as the command ended: the prompts, the trace
        (["bench", "compare", "--prompts", "{tmp}/p.txt", "--json", "{tmp}/p.txt"], "p.txt: writing it would destroy"),
        # written at the end, the plot replaced the JSON
        (["bench", "compare", "--json", "{tmp}/out", "--plot", "{tmp}/out"], "--plot {tmp}/out is the file of --json"),
        (["calibrate", "--embedder", "hash", "--prompts", "{tmp}/p.txt", "--json", "{tmp}/p.txt"], "--json {tmp}/p"),
        (["bench", "engine", "--doors", "foo"], "--doors takes zmq and/or http"),
        # measured twice, the first's figures lost and the second's printed in both rows
        (["bench", "engine", "--doors", "zmq,zmq"], "--doors takes zmq and/or http, each once, not 'zmq,zmq'"),
        # taken and never used: the door measured was at its default load
        (
            ["bench", "engine", "--doors", "http", "--concurrency", "256"],
            "--concurrency is the zmq door's load, and --doors http measures no zmq: drop it",
        ),
        (
            ["bench", "engine", "--doors", "zmq", "--http-concurrency", "64"],
            "--http-concurrency is the http door's load, and --doors zmq measures no http: drop it",
        ),
        # it built and restored a cache, sent nothing, and printed a table of no requests
        (["bench", "checkpoint", "--rate", "0.1", "--duration", "1"], "--rate 0.1 for --duration 1 s sends no request"),
        (["bench", "scale", "--fleets", "9", "--workers", "2"], "--fleets must be at most --workers"),
        (["profile", "latency", "--backend", "sim", "--batches", "2", "--out", "{tmp}/x.json"], "--batches must"),
        (["profile", "latency", "--backend", "tiny", "--time-scale", "2", "--out", "{tmp}/x.json"], "--time-scale"),
        # taken, where bench worker refuses them: -1 is no image seed the engine takes (0 to 2**63 - 1), and NaN
        # guidance makes NaN images
        (
            ["profile", "latency", "--seed", "-1", "--out", "{tmp}/x.json"],
            f"--seed: expected a number from 0 to {_MAX_SEED}",
        ),
        # past 2**64 msgpack cannot encode: a traceback once the model was built; past 2**63 - 1 the engine refuses
        *[
            (
                ["profile", kind, "--seed", seed, "--out", "{tmp}/x.json"],
                f"--seed: expected a number from 0 to {_MAX_SEED}",
            )
            for kind in ("latency", "quality")
            for seed in ("18446744073709551616", "9223372036854775808")
        ],
        (["profile", "latency", "--guidance", "nan", "--out", "{tmp}/x.json"], "argument --guidance: expected a"),
        (["train-predictor", "{tmp}/few.jsonl", "--out", "{tmp}/o.json"], "need at least 10 samples"),
        # the replay's flags were ignored without it, and the index benchmark ran (small here: it ran to the end)
        (["bench", "cache", "--embedder", "minilm", *SMALL_CACHE_BENCH], "--embedder: only with --replay"),
        (["bench", "cache", "--model-path", "{tmp}", *SMALL_CACHE_BENCH], "--model-path: only with --replay"),
        # likewise ignored by the hash embedder; clip's missing model was said as make_embedder's `model_path`
        (["bench", "cache", "--replay", "{tmp}/p.txt", "--model-path", "{tmp}"], "--model-path goes with --embedder"),
        (["bench", "cache", "--replay", "{tmp}/p.txt", "--embedder", "clip"], "--embedder clip needs --model-path"),
        # the index benchmark's flags were ignored by the replay, which ran on the file's prompts alone
        (["bench", "cache", "--replay", "{tmp}/p.txt", "--entries", "50"], "--entries: not with --replay"),
        (["bench", "cache", "--replay", "{tmp}/p.txt", "--seed", "3", "--vectors", "random"], "--vectors and --seed:"),
        # hash vectors of prompts are 1024 wide whatever --dim said
        (["bench", "cache", "--dim", "64", *SMALL_CACHE_BENCH], "--dim: only with --vectors random"),
        (["bench", "cache", "--vectors", "random", "--data", "{tmp}", *SMALL_CACHE_BENCH], "--data: only with"),
    ],
)
def test_flags_that_cannot_run_together_exit_2_as_usage_errors(argv, says, tmp_path, capsys):
    """These said why in one line but exited 1, as a failed run does (SystemExit with a message)."""
    (tmp_path / "few.jsonl").write_text('{"similarity": 0.9, "level": 10, "quality": 90.0, "prompt": "a"}\n')
    (tmp_path / "p.txt").write_text("a red fox\na blue whale\n")
    assert _exit_code([arg.format(tmp=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert says.format(tmp=tmp_path) in err and "Traceback" not in err
    assert (tmp_path / "p.txt").read_text() == "a red fox\na blue whale\n"


def _address_space_at_most(size: int):
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (size, size))


def test_checkpoint_bench_refuses_a_cache_no_host_holds():
    """--cache-mib had no bound: 100,000 built its cache, silently, for minutes. In a process of its own whose address
    space is bounded, so that a bench building it anyway fails in a MemoryError, not by taking the machine's memory."""
    argv = [sys.executable, "-m", "engine.cli", "bench", "checkpoint", "--cache-mib", str(2**30)]  # a PiB
    proc = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=_address_space_at_most(4 << 30)
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith("argus bench checkpoint: error: --cache-mib 1,073,741,824 is more than this host's")
    assert proc.stderr.count("\n") == 1


def test_checkpoint_bench_refuses_a_rate_past_its_bound(monkeypatch, capsys):
    """Unbounded, --rate 1e11 built the cache, started an engine and created probe tasks as fast as it could."""

    def run_anyway(*_):
        raise AssertionError("the bench ran")

    monkeypatch.setattr(checkpoint_bench, "_check_room", run_anyway)
    assert _exit_code(["bench", "checkpoint", "--rate", "1e11"]) == 2
    err = capsys.readouterr().err
    says = "argument --rate: expected a number above 0 and at most 1,000 requests a second (the engine's default queue"
    assert f"{says} fills past it, and the run fails), not '1e11'" in err and "Traceback" not in err


def test_checkpoint_bench_refuses_a_cache_its_temporary_folder_cannot_hold(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_bench, "host_memory_bytes", lambda: None)  # a host that does not say
    half_the_space = shutil.disk_usage(tmp_path).free // 2
    with pytest.raises(UsageError, match=f"--cache-mib {(half_the_space + (1 << 20)) >> 20:,}: {tmp_path} has"):
        checkpoint_bench._check_room(half_the_space + (1 << 20), str(tmp_path))
    checkpoint_bench._check_room(1 << 20, str(tmp_path))
