"""The command line refuses numbers its components cannot run with, and flags it would ignore or fail on later,
naming the option, before starting anything."""

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from command_names import command_name
from model_folders import save_model_folder

from engine.cache.embedders import MINILM_PACKAGE
from engine.cli import UsageError, build_parser, engine_config, main
from engine.commands.arg_types import positive_int
from engine.commands.worker import check_worker_args
from engine.config import LaunchConfig
from engine.fleet.launcher import worker_command
from engine.system import open_files
from loadgen.bench import cache_bench
from loadgen.bench.commands import BENCHMARKS
from protocols.curve import create_key_files
from workers.config import usable_cpus
from workers.main import SIM_SIMILARITY_TABLE_ENV


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["serve", "--window-s", "0"], "--window-s"),
        (["serve", "--slo-ms", "-5"], "--slo-ms"),
        (["serve", "--slo-ms", "nan"], "--slo-ms"),
        (["serve", "--max-queue", "0"], "--max-queue"),
        (["serve", "--workers", "-1"], "--workers"),
        (["serve", "--cache-bytes", "-1"], "--cache-bytes"),
        (["serve", "--image-url-ttl", "0"], "--image-url-ttl"),
        (["serve", "--image-url-ttl", "inf"], "--image-url-ttl"),
        (["serve", "--image-url-store-bytes", "0"], "--image-url-store-bytes"),
        (["serve", "--image-url-store-bytes", "256MiB"], "--image-url-store-bytes"),
        (["serve", "--heartbeat-timeout", "inf"], "--heartbeat-timeout"),
        (["serve", "--time-scale", "-0.5"], "--time-scale"),
        # the engine's sim profile, scaled by it, overflowed: its start ended in a ValueError traceback
        (["serve", "--backend", "sim", "--time-scale", "1e307"], "--time-scale"),
        (["worker", "--connect", "tcp://127.0.0.1:5556", "--backend", "sim", "--time-scale", "1e307"], "--time-scale"),
        # past 65535 the engine listened on the port modulo 65536 (70000: 4464), -1 failed once it had started
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--port", "-1"], "--port"),
        (["worker", "--connect", "tcp://127.0.0.1:5556", "--count", "0"], "--count"),
        (["worker", "--connect", "tcp://127.0.0.1:5556", "--threads", "two"], "--threads"),
        (["worker", "--connect", "tcp://127.0.0.1:5556", "--stall-timeout", "0"], "--stall-timeout"),
        # measured first, then failed: "level 0 outside 0..-1"
        (["profile", "latency", "--steps", "0"], "--steps"),
        (["profile", "latency", "--batches", "1,x"], "--batches"),
        (["profile", "latency", "--levels", "a"], "--levels"),
        (["profile", "latency", "--repeats", "0"], "--repeats"),
        (["profile", "quality", "p.txt", "--clip", "clip", "--batch", "0"], "--batch"),
        # a negative limit cut prompts off the end
        (["calibrate", "--embedder", "hash", "--prompts", "p.txt", "--limit", "-1"], "--limit"),
        (["profile", "quality", "p.txt", "--clip", "clip", "--limit", "-1"], "--limit"),
        # K=0, the exact image, is made anyway: every prompt was generated and none resumed from a neighbour
        (["profile", "quality", "p.txt", "--clip", "clip", "--levels", "0"], "--levels"),
        (["profile", "quality", "p.txt", "--clip", "clip", "--levels", "5,0"], "--levels"),
        # refused after the samples were read, by the predictor's own names: "min_probability within 0..1"
        (["train-predictor", "s.jsonl", "--min-probability", "2"], "--min-probability"),
        (["train-predictor", "s.jsonl", "--min-probability", "nan"], "--min-probability"),
        (["train-predictor", "s.jsonl", "--target", "nan"], "--target"),
    ],
)
def test_a_number_out_of_range_is_a_usage_error(argv, option, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert re.search(f"argument {option}: expected a (whole |finite )?number", capsys.readouterr().err)


def test_an_integer_past_a_floats_range_is_read_as_any_other(capsys):
    """math.isfinite raised OverflowError on it: a traceback, where the bound that refuses it names the flag."""
    huge = "1" + "0" * 400
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--max-queue", huge])
    assert "argument --max-queue: expected a number from 1 to 1,000,000,000 images" in capsys.readouterr().err
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number > 0"):
        positive_int(f"-{huge}")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        # the control loop looks at most every 10 ms: re-planned that often all the same, on 10 ms of demand
        (["--window-s", "0.000001"], "--window-s: expected a number >= 0.01 s (the controller looks at its window"),
        (["--window-s", "0.009"], "every 10 ms at most), not '0.009'"),
        # every response_format url answered 400 after its images were made
        (["--image-url-store-bytes", "1"], "--image-url-store-bytes: expected a number >= 354 (each image is counted"),
        (["--image-url-store-bytes", "353"], "a smaller store holds no image), not '353'"),
    ],
)
def test_serve_refuses_a_number_below_what_can_work(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", *argv])
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        # it said "(the controller looks at its window every 10 ms at most)", a reason for a number too small
        (["--window-s", "inf"], "argument --window-s: expected a finite number >= 0.01 s, not 'inf'\n"),
        (["--window-s", "nan"], "argument --window-s: expected a finite number >= 0.01 s, not 'nan'\n"),
        (["--window-s", "10s"], "argument --window-s: expected a number >= 0.01 s, not '10s'\n"),
        # it said "(... a smaller store holds no image)" of a billion bytes, written as a float
        (
            ["--image-url-store-bytes", "1e9"],
            "argument --image-url-store-bytes: expected a whole number >= 354, not '1e9'\n",
        ),
        (
            ["--max-queue", "1e3"],
            "argument --max-queue: expected a whole number from 1 to 1,000,000,000 images, not '1e3'\n",
        ),
        (["--slo-ms", "inf"], "argument --slo-ms: expected a finite number > 0, not 'inf'\n"),
    ],
)
def test_serve_says_why_a_value_that_is_no_number_is_refused(argv, says, capsys):
    """A bound's reason is said of a number out of bounds, not of one that is infinite or not whole."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", *argv])
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_serve_takes_the_least_that_works():
    """A short window is a compressed clock's (a sim worker at --time-scale 0.001 makes 10 s of it 0.01 s); the
    smallest store holds an image of a few dozen bytes. An SLO too short for any level is warned of, not refused:
    zero-latency sim workers make the default SLO 0 (docs/controller.md)."""
    args = build_parser().parse_args(["serve", "--window-s", "0.01", "--image-url-store-bytes", "354"])
    assert (args.window_s, args.image_url_store_bytes) == (0.01, 354)
    assert build_parser().parse_args(["serve", "--slo-ms", "0.001"]).slo_ms == 0.001


@pytest.mark.parametrize("levels", ["7", "20,10", "10,10", "0,10", "10,", "ten"])
def test_serve_takes_cache_levels_the_controller_knows_ascending(levels, capsys):
    """Levels with no similarity threshold or modelled quality (7, 0), or not ascending and distinct."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--levels", levels])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --levels: expected some of 5,10,15,20,25, ascending, comma separated, not {levels!r}" in err
    assert engine_config(build_parser().parse_args(["serve", "--levels", "10,20"])).cache.levels == (10, 20)


# every file a command writes when it ends (the flag last): a measurement may take hours, and a typo in the
# directory was found only then, the measurements lost
OUTPUT_FILES = [
    ["profile", "latency", "--out"],
    ["profile", "quality", "prompts.txt", "--clip", "clip", "--out"],
    ["train-predictor", "samples.jsonl", "--out"],
    ["calibrate", "--embedder", "hash", "--prompts", "prompts.txt", "--json"],
    *(["bench", name, "--json"] for name in BENCHMARKS),
    ["bench", "compare", "--plot"],
    ["loadgen", "--records"],
    ["loadgen", "--json"],
    ["loadgen", "--plot"],
]


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["serve", "--device", "cpu"],
        ["worker", "--connect", "ipc:///w"],
        ["profile", "latency", "--out", "p.json"],
    ],
)
# torch's index is a signed byte: cuda:256 ran on cuda:0, cuda:128 was cuda:-128; cuda:07 and an index past 2**31
# raised as the device was checked, a traceback
@pytest.mark.parametrize(
    "device",
    ["gpu", "cuda0", "cuda:", "cuda:-1", "CPU", "cuda:07", "cuda:128", "cuda:256", "cuda:99999999999999999999"],
)
def test_a_device_no_worker_runs_on_is_refused_at_start(argv, device, capsys):
    """Each worker failed as it started, and an engine restarted its local workers so for ever, never ready."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*argv, "--device", device])
    assert exited.value.code == 2
    assert (
        f"argument --device: expected cpu, cuda, cuda:N (N 0 to 127) or mps, not {device!r}" in capsys.readouterr().err
    )
    for good in ("cpu", "cuda", "cuda:3", "cuda:10", "cuda:127", "mps"):
        build_parser().parse_args([*argv, "--device", good])


@pytest.mark.parametrize("argv", OUTPUT_FILES, ids=" ".join)
def test_an_output_file_that_cannot_be_written_is_refused_before_the_run(argv, tmp_path, capsys):
    option = argv[-1]
    # given empty (a variable left unset), it was said to be a directory: "argument --json:  is a directory, not a file"
    empty = ("", "is empty (a variable left unset?): give a file to write, or leave it out")
    # a directory not there yet: it was written as a file of its name, "results"
    not_there = (f"{tmp_path / 'results'}/", "names a directory, not a file")
    for path, says in [
        (tmp_path / "typo" / "out.json", "no directory"),
        (tmp_path, "is a directory"),
        empty,
        not_there,
        # root may write anywhere to os.access, /proc too, which refused the file as the run ended: the run went first
        ("/proc/out.json", "cannot write in /proc"),
    ]:
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*argv, str(path)])
        assert exited.value.code == 2
        error = capsys.readouterr().err.splitlines()[-1]
        assert f"argument {option}: " in error and says in error
    args = build_parser().parse_args([*argv, str(tmp_path / "out.json")])
    assert str(tmp_path / "out.json") in vars(args).values()
    assert list(tmp_path.iterdir()) == []  # the file made to see whether one can be is gone


def test_comma_separated_numbers_are_read_as_a_list():
    args = build_parser().parse_args(["profile", "latency", "--batches", "1,4,2,", "--levels", "0,10", "--out", "p"])
    assert (args.batches, args.levels) == ([1, 4, 2], [0, 10])


def test_an_unknown_log_level_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--log-level", "bogus", "keys", "--dir", "k"])
    assert exited.value.code == 2
    assert "argument --log-level: invalid choice: 'BOGUS'" in capsys.readouterr().err
    assert build_parser().parse_args(["--log-level", "debug", "keys", "--dir", "k"]).log_level == "DEBUG"


def test_zero_where_zero_means_something_is_accepted():
    argv = ["serve", "--workers", "0", "--time-scale", "0", "--shutdown-timeout", "0", "--port", "0"]
    args = build_parser().parse_args(argv)
    assert (args.workers, args.time_scale, args.shutdown_timeout, args.port) == (0, 0.0, 0.0, 0)
    assert build_parser().parse_args(["serve", "--port", "65535"]).port == 65535


def test_a_cache_of_no_memory_is_refused_though_its_latents_go_to_disk(tmp_path):
    """Its prompts are held in memory, charged to --cache-bytes: a cache of none holds nothing."""
    argv = ["serve", "--cache-bytes", "0", "--cache-dir", str(tmp_path), "--cache-dir-bytes", "1000000"]
    with pytest.raises(UsageError, match=re.escape("--cache-bytes 0 holds nothing: each cached prompt keeps its text")):
        engine_config(build_parser().parse_args(argv))


# flags that each parse but cannot run together: refused before anything starts, not accepted and then ignored
# (or failing once the engine is up)
@pytest.mark.parametrize(
    ("argv", "says"),
    [
        # more than any host has (2^62 bytes): the engine would be killed for its memory as the store filled
        (["serve", "--image-url-store-bytes", str(2**62)], "is more than this host's memory"),
        # accepted: the engine would be killed for its memory as the cache filled, hours in
        (["serve", "--cache-bytes", str(2**62)], f"--cache-bytes {2**62:,} is more than this host's memory"),
        (["serve", "--backend", "sdxl", "--workers", "1"], "--backend sdxl needs --model"),
        (["serve", "--backend", "tiny", "--time-scale", "0.1"], "--time-scale scales the sim backend"),
        # tiny (the default) and sim read no model: the tiny model's pictures were served as if from the SD-XL one
        (["serve", "--model", "/models/sdxl"], "--model is read by the sdxl backend only, not tiny"),
        (["serve", "--backend", "sim", "--model", "/models/sdxl"], "--model is read by the sdxl backend only, not sim"),
        (["serve", "--ray-address", "10.0.0.9:6379"], "go with --launcher ray"),
        (["serve", "--ray-connect", "tcp://10.0.0.5:5556"], "go with --launcher ray"),
        # accepted and ignored: the local launcher joins no cluster
        (["serve", "--ray-connect-timeout", "300"], "--ray-connect-timeout go with --launcher ray"),
        # accepted and ignored: only a launcher reads them, for the workers it starts
        (["serve", "--workers", "0", "--device", "cuda:0"], "--device is for the workers the engine starts, and with"),
        (["serve", "--workers", "0", "--startup-timeout", "600"], "--startup-timeout is for the workers the engine"),
        (["serve", "--workers", "0", "--device", "cpu", "--startup-timeout", "9"], "--startup-timeout are for the"),
        # round-robin: the second device got no worker
        (
            ["serve", "--workers", "1", "--device", "cpu", "--device", "mps"],
            "--device mps: --workers 1 run on cpu alone",
        ),
        (["serve", "--workers", "3", *("--device", "cpu") * 3, "--device", "cuda:1"], "--device cuda:1: --workers 3"),
        (["serve", "--launcher", "ray", "--workers", "0"], "with --workers 0 it has none to start"),
        # the engine loaded the embedder as it was built: a ValueError, or transformers' OSError, traceback
        (["serve", "--embedder", "clip"], "--embedder clip needs --embedder-path"),
        (["serve", "--embedder", "clip", "--embedder-path", "/no/such/clip"], "/no/such/clip does not exist"),
        (["serve", "--embedder", "minilm", "--embedder-path", "/no/such/minilm"], "/no/such/minilm does not exist"),
        # a file as --cache-dir was "not writable (File exists)", said once the embedder had loaded
        (["serve", "--cache-dir", "/dev/null"], "--cache-dir /dev/null is a file, not a folder"),
        # an unset variable ("$HOST"): the engine listened on every interface, where the default is loopback only
        (["serve", "--host", ""], "--host is empty: give an address"),
        (["serve", "--host", " "], "--host is empty: give an address"),
        # an unset variable ("$CACHE_DIR"): the engine ran as without one, nothing saved, and restarted cold
        (["serve", "--cache-dir", ""], "--cache-dir is empty: give a folder"),
        (["serve", "--cache-dir", "", "--cache-dir-bytes", "9"], "--cache-dir is empty: give a folder"),
        # accepted and ignored: nothing spilled, no model read, no cache saved to or loaded from the directory
        (["serve", "--cache-dir-bytes", "1000000"], "--cache-dir-bytes spills latents to --cache-dir"),
        (["serve", "--embedder-path", "/tmp"], "--embedder-path goes with --embedder clip or minilm"),
        (["serve", "--cache-save-interval", "60"], "--cache-save-interval saves the cache to --cache-dir"),
        (["serve", "--no-cache", "--cache-save-interval", "0"], "--no-cache keeps no prompt cache: drop --cache-save-"),
        (["serve", "--no-cache", "--cache-dir", "/tmp"], "--no-cache keeps no prompt cache: drop --cache-dir"),
        (["serve", "--no-cache", "--cache-dir-bytes", "9"], "--no-cache keeps no prompt cache: drop --cache-dir-bytes"),
        (["serve", "--no-cache", "--embedder-path", "/tmp"], "--no-cache keeps no prompt cache: drop --embedder-path"),
        (["serve", "--no-cache", "--levels", "10,20"], "--no-cache keeps no prompt cache: drop --levels"),
        (["serve", "--no-cache", "--cache-bytes", "5"], "--no-cache keeps no prompt cache: drop --cache-bytes"),
        # every image exact: the predictor was never asked for a level, nor the quality profile's levels planned
        (["serve", "--no-cache", "--predictor", "/tmp/k.json"], "--no-cache keeps no prompt cache: drop --predictor"),
        (["serve", "--no-cache", "--quality-profile", "q.jsonl"], "--no-cache keeps no prompt cache: drop --quality-"),
        # read and checked, then never asked for a level
        (["serve", "--policy", "nirvana", "--predictor", "k.json"], "--policy nirvana picks each prompt's level by"),
        # a request's key names its client first: the proxies' X-Forwarded-For was never read
        (
            ["serve", "--api-keys", "keys.txt", "--forwarded-allow-ips", "10.0.0.5"],
            "--forwarded-allow-ips names a client by its address, and under --api-keys each request's key names its",
        ),
        # a cache of no room: every image was a miss, the engine saying nothing of it
        (["serve", "--cache-bytes", "0"], "--cache-bytes 0 holds nothing: each cached prompt keeps its text, vector"),
        (["serve", "--cache-bytes", "0", "--cache-dir", "/tmp"], "Give --no-cache for none"),
    ],
)
def test_serve_refuses_flags_it_would_ignore_or_fail_on(argv, says):
    with pytest.raises(UsageError, match=re.escape(says)):
        engine_config(build_parser().parse_args(argv))


# refused by the flag, before anything starts
@pytest.mark.parametrize(
    ("argv", "says"),
    [
        # below the heartbeat interval, healthy workers were lost and restarted in a loop
        (["--heartbeat-timeout", "0.5"], "argument --heartbeat-timeout: expected a number from 2 to 2,147,483 s"),
        # past what ZeroMQ counts in a C int, the engine's start failed in a traceback (OverflowError, exit 1)
        (["--heartbeat-timeout", "2147484"], "ZeroMQ counts a longer one in ms, in an int), not '2147484'"),
        (["--max-queue", "9999999999"], "argument --max-queue: expected a number from 1 to 1,000,000,000 images"),
        # an hour given in ms: images held in memory for 41 days
        (["--image-url-ttl", "3600000"], "above 0 and at most 604,800 s (a week: the images are held in memory;"),
    ],
)
def test_serve_refuses_a_flag_out_of_bounds_naming_it(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", *argv])
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_an_image_url_store_out_of_bounds_exits_2_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--image-url-ttl", "3600000", "--image-url-store-bytes", "354"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith(
        "argus serve: error: argument --image-url-ttl: expected a number above 0 and at most 604,800 s (a week: the"
        " images are held in memory; it counts seconds, not ms), not '3600000'\n"
    )


@pytest.mark.parametrize(
    ("argv", "environment", "says"),
    [
        # every route was open, with no word said
        (["serve", "--api-key", ""], {}, "--api-key is empty: give a key, or leave --api-key out for none"),
        (["serve"], {"ARGUS_API_KEY": ""}, "$ARGUS_API_KEY is empty: give a key, or unset ARGUS_API_KEY for none"),
        # every request was a 401, the right key too: HTTP trims a header, and carries no newline
        (["serve"], {"ARGUS_API_KEY": "s3cret\n"}, "no HTTP client can send it"),
        (["serve", "--api-key", " s3cret"], {}, "no HTTP client can send it"),
        (["serve", "--api-key", "s3\x01cret"], {}, "no HTTP client can send it"),
        # served curl (UTF-8), and was a 401 to Python's urllib and requests (Latin-1), the right key too
        (["serve", "--api-key", "cl\u00e9"], {}, "--api-key holds 'é', which is not ASCII"),
        (["serve"], {"ARGUS_API_KEY": "cl\u00e9"}, "$ARGUS_API_KEY holds 'é', which is not ASCII"),
        # the flag given wins over the variable, and is the one named
        (["serve", "--api-key", ""], {"ARGUS_API_KEY": "s3cret"}, "--api-key is empty: give a key, or leave"),
    ],
)
def test_serve_refuses_an_api_key_that_is_no_key_or_cannot_be_sent(argv, environment, says, monkeypatch):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=re.escape(says)):
        engine_config(build_parser().parse_args(argv))
    monkeypatch.delenv("ARGUS_API_KEY", raising=False)
    assert engine_config(build_parser().parse_args(["serve", "--api-key", "s3 cret"])).api_keys.holder(b"s3 cret") == ""


@pytest.mark.parametrize(
    "url",
    [
        "images.example.com",  # no scheme
        "ftp://images.example.com",
        "https://",
        "https://images example.com",
        "https://images.example.com:99999",
        "https://images.example.com:0",  # no client reaches port 0
        "https://images.example.com:/argus",  # https://HOST:$PORT/argus with PORT unset
        "https://images.example.com/a b",
        "https://images.example.com/?key=1",
        "https://images.example.com/#top",
        "https://user:secret@images.example.com",
        # urlsplit reads past tabs and newlines anywhere and spaces or controls before the scheme, and the URL was
        # kept as given: image URLs ended their prefix in a newline (a value read from a file, a YAML block) or began
        # with a space, which clients sent as another path (requests: /argus%0A/v1/...) or not at all
        "https://images.example.com/argus\n",
        "https://images.example.com\t/argus",
        " https://images.example.com",
        "\x00https://images.example.com",
        # a % that starts no escape: Python's clients sent /50%25off/..., a browser /50%off/...
        "https://images.example.com/50%off",
        "https://images.example.com/argus%",
        "https://images.example.com\n",  # a value read from a file, its newline kept
        "https://images.example.com/ar\tgus",
    ],
)
def test_a_public_url_image_urls_cannot_start_with_is_a_usage_error(url, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--public-url", url])
    assert exited.value.code == 2
    assert "argument --public-url:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://images.example.com/argus/", "https://images.example.com/argus"),
        ("http://[::1]:8443", "http://[::1]:8443"),
        ("https://images.example.com/team%2Fa/", "https://images.example.com/team%2Fa"),
    ],
)
def test_a_public_url_is_kept_without_its_final_slash(url, kept):
    assert engine_config(build_parser().parse_args(["serve", "--public-url", url])).public_url == kept


@pytest.mark.parametrize("address", ["127.0.0.1:5556", "tcp://127.0.0.1", "tcp://host:0", "tcp://host:99999", "ipc://"])
@pytest.mark.parametrize(
    "argv", [["worker", "--backend", "sim", "--connect"], ["serve", "--launcher", "ray", "--ray-connect"]]
)
def test_an_engine_address_zeromq_cannot_dial_is_a_usage_error(argv, address, capsys):
    """A worker died of it with a traceback as it connected; under --launcher ray, actor after actor did."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*argv, address])
    assert exited.value.code == 2
    assert f"expected tcp://HOST:PORT or ipc://PATH, not '{address}'" in capsys.readouterr().err


@pytest.mark.parametrize("address", ["tcp://10.0.0.7:5556", "tcp://[::1]:5556", "tcp://gpu-7.example:5556", "ipc:///a"])
def test_an_engine_address_zeromq_dials_is_taken(address):
    args = build_parser().parse_args(["worker", "--connect", address])
    assert args.connect == address


@pytest.mark.parametrize("flag", ["--client-listen", "--worker-listen"])
@pytest.mark.parametrize("address", ["foo", "5555", "127.0.0.1:5555", "tcp://127.0.0.1", "tcp://:5555", "ipc://"])
def test_a_listen_address_that_is_no_zeromq_address_is_refused_before_the_engine_starts(flag, address, capsys):
    """The engine failed on it only as it bound it, after warning that the address listened without CURVE."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", flag, address])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"argus serve: error: argument {flag}: expected tcp://HOST:PORT or ipc://PATH, not '{address}'"
    )


@pytest.mark.parametrize(
    "address", ["tcp://*:5555", "tcp://127.0.0.1:0", "tcp://[::1]:*", "tcp://eth0:5555", "ipc:///a"]
)
def test_a_listen_address_zeromq_binds_is_taken(address):
    args = build_parser().parse_args(["serve", "--client-listen", address, "--worker-listen", address])
    assert args.client_listen == args.worker_listen == [address]


# ZeroMQ (or aiohttp) said the second listener's address was in use, as if another process held it; a second ipc://
# socket on a path took it over without a word
@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["--client-listen", "tcp://127.0.0.1:20900", "--worker-listen", "tcp://127.0.0.1:20900"],
            "--client-listen tcp://127.0.0.1:20900 and --worker-listen tcp://127.0.0.1:20900 would listen on one",
        ),
        (
            ["--worker-listen", "tcp://127.0.0.1:20900", "--worker-listen", "tcp://127.0.0.1:20900"],
            "--worker-listen tcp://127.0.0.1:20900 and --worker-listen tcp://127.0.0.1:20900 would listen on one",
        ),
        (
            ["--port", "20900", "--client-listen", "tcp://127.0.0.1:20900"],
            "--host 127.0.0.1 --port 20900 and --client-listen tcp://127.0.0.1:20900 would listen on one address",
        ),
        (
            ["--port", "5556"],
            "--host 127.0.0.1 --port 5556 and --worker-listen tcp://127.0.0.1:5556 (its default) would listen on one",
        ),
        (
            ["--host", "0.0.0.0", "--port", "20900", "--worker-listen", "tcp://10.0.0.5:20900"],
            "--host 0.0.0.0 --port 20900 and --worker-listen tcp://10.0.0.5:20900",
        ),
        (["--worker-listen", "tcp://*:5555"], "--client-listen tcp://127.0.0.1:5555 (its default) and --worker-listen"),
        (
            ["--client-listen", "ipc:///tmp/argus/sock", "--worker-listen", "ipc:///tmp/argus/../argus/sock"],
            "--client-listen ipc:///tmp/argus/sock and --worker-listen ipc:///tmp/argus/../argus/sock would listen",
        ),
        # a name by the addresses it resolves to, an IPv6 address however written: the second bind was "in use"
        (
            ["--host", "localhost", "--port", "20900", "--client-listen", "tcp://127.0.0.1:20900"],
            "--host localhost --port 20900 and --client-listen tcp://127.0.0.1:20900 would listen on one address",
        ),
        (
            ["--client-listen", "tcp://localhost:20900", "--worker-listen", "tcp://127.0.0.1:20900"],
            "--client-listen tcp://localhost:20900 and --worker-listen tcp://127.0.0.1:20900 would listen on one",
        ),
        (
            ["--host", "0:0:0:0:0:0:0:1", "--port", "20900", "--client-listen", "tcp://[::1]:20900"],
            "--host 0:0:0:0:0:0:0:1 --port 20900 and --client-listen tcp://[::1]:20900 would listen on one address",
        ),
        (
            ["--host", "localhost", "--port", "20900", "--client-listen", "tcp://0.0.0.0:20900"],
            "--host localhost --port 20900 and --client-listen tcp://0.0.0.0:20900 would listen on one address",
        ),
    ],
)
def test_serve_refuses_two_of_its_listeners_on_one_address_naming_both(argv, says):
    with pytest.raises(UsageError, match=re.escape(says)):
        engine_config(build_parser().parse_args(["serve", *argv]))


@pytest.mark.parametrize(
    "argv",
    [
        ["--client-listen", "tcp://127.0.0.1:0", "--worker-listen", "tcp://127.0.0.1:0"],  # each its own free port
        ["--client-listen", "tcp://127.0.0.1:20900", "--worker-listen", "tcp://10.0.0.5:20900"],
        ["--host", "::1", "--port", "20900", "--client-listen", "tcp://0.0.0.0:20900"],  # IPv4's wildcard only
        ["--client-listen", "ipc:///tmp/argus/clients", "--worker-listen", "ipc:///tmp/argus/workers"],
        # ZeroMQ listens on a name's IPv4 address alone (its IPV6 option is off for all but an IPv6 address)
        ["--host", "::1", "--port", "20900", "--client-listen", "tcp://localhost:20900"],
        ["--host", "127.0.0.2", "--port", "20900", "--client-listen", "tcp://localhost:20900"],
    ],
)
def test_serve_takes_listeners_on_addresses_of_their_own(argv):
    engine_config(build_parser().parse_args(["serve", *argv]))


def test_serve_accepts_what_it_runs_with():
    config = engine_config(build_parser().parse_args(["serve", "--heartbeat-timeout", "2"]))
    assert (config.heartbeat_timeout_s, config.launch.time_scale) == (2.0, 1.0)
    # no local workers need no model: the engine alone reads the backend's latency profile
    engine_config(build_parser().parse_args(["serve", "--backend", "sdxl", "--workers", "0"]))
    config = engine_config(build_parser().parse_args(["serve", "--backend", "sim", "--time-scale", "0"]))
    assert config.launch.time_scale == 0.0
    config = engine_config(
        build_parser().parse_args(["serve", "--image-url-ttl", "604800", "--image-url-store-bytes", "354"])
    )
    assert (config.image_url_ttl_s, config.image_url_store_bytes) == (604800.0, 354)


def test_launcher_ray_without_ray_is_refused_before_the_engine_starts(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # find_spec answers None, as without Ray installed
    with pytest.raises(UsageError, match=re.escape("pip install -e '.[ray]'")):
        engine_config(build_parser().parse_args(["serve", "--launcher", "ray", "--workers", "2"]))


def test_the_embedder_is_checked_only_when_the_engine_loads_one(tmp_path, monkeypatch):
    clip = ["serve", "--embedder", "clip", "--embedder-path", save_model_folder(tmp_path / "clip", "clip_text_model")]
    assert engine_config(build_parser().parse_args(clip)).cache.embedder_path == str(tmp_path / "clip")
    # without a cache no embedder is loaded; --embedder picks the controller's similarity table
    assert (
        engine_config(build_parser().parse_args(["serve", "--no-cache", "--embedder", "clip"])).cache.embedder == "clip"
    )
    monkeypatch.setitem(sys.modules, MINILM_PACKAGE, None)  # find_spec answers None, as without the extra installed
    with pytest.raises(UsageError, match=re.escape("pip install -e '.[minilm]'")):
        engine_config(build_parser().parse_args(["serve", "--embedder", "minilm"]))
    minilm = ["serve", "--embedder", "minilm", "--embedder-path", save_model_folder(tmp_path / "minilm", "bert")]
    assert engine_config(build_parser().parse_args(minilm)).cache.embedder == "minilm"
    spill = ["serve", "--cache-dir", str(tmp_path), "--cache-dir-bytes", "1000"]
    assert engine_config(build_parser().parse_args(spill)).cache.directory_bytes == 1000


def test_curve_allow_must_be_a_directory(tmp_path):
    _, secret = create_key_files(tmp_path / "keys", "engine")
    public, _ = create_key_files(tmp_path / "allowed", "worker")
    for mistyped in (tmp_path / "alowed", public):
        argv = ["serve", "--curve-secret", str(secret), "--curve-allow", str(mistyped)]
        with pytest.raises(UsageError, match="not a directory"):
            engine_config(build_parser().parse_args(argv))
    argv = ["serve", "--curve-secret", str(secret), "--curve-allow", str(tmp_path / "allowed")]
    assert engine_config(build_parser().parse_args(argv)).curve_allowed_dir == str(tmp_path / "allowed")


WORKER = ["worker", "--connect", "tcp://127.0.0.1:5556"]


@pytest.mark.parametrize(
    "command",
    [WORKER, ["profile", "latency", "--out", "latency.json"], ["bench", "worker"]],
    ids=lambda command: " ".join(command[:2]),
)
def test_more_threads_than_cpus_are_refused_naming_the_flag_and_the_cpus(command, capsys):
    """Past the CPUs, torch's threads only took turns on them (a 256x256 matmul 160 times slower with 1,000 threads
    on 2 cores), and past 2**31 - 1 the worker died with a traceback as it loaded its model."""
    cpus = usable_cpus()
    for threads in (cpus + 1, 2**31):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*command, "--threads", str(threads)])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert f"argument --threads: at most {cpus}, the CPUs this process may run on" in err, err
        assert err.endswith(f"not '{threads}'\n"), err
    assert build_parser().parse_args([*command, "--threads", str(cpus)]).threads == cpus


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--backend", "sim", "--count", "4", "--device", "cuda:3"], "use no --device, --threads"),
        (["--backend", "sim", "--count", "4", "--threads", "1"], "use no --device, --threads"),
        (["--backend", "sim", "--count", "4", "--stall-timeout", "9"], "--threads or --stall-timeout"),
        # accepted and ignored: a lone sim worker shows a step as it sleeps, every 50 ms
        (["--backend", "sim", "--stall-timeout", "9"], "--stall-timeout bounds a model's stretch without a denois"),
        (["--backend", "tiny", "--time-scale", "0.1"], "--time-scale scales the sim backend"),
        (["--model", "/models/sdxl"], "--model is read by the sdxl backend only, not tiny"),
        # the ZeroMQ identity (id, "/", 8 hex digits) would pass 255 bytes: the worker died as it connected
        (["--worker-id", "w" * 247], "--worker-id is 247 bytes; at most 246"),
        (["--worker-id", "é" * 124], "--worker-id is 248 bytes"),
        (["--backend", "sim", "--count", "100", "--worker-id", "w" * 244], "247 bytes with --count's suffix -99"),
        # it quietly became the default, the host's name and the pid
        (["--worker-id", ""], "--worker-id '': a worker id is not empty"),
        (["--worker-id", " "], "--worker-id ' ': a worker id is not blank (spaces only)"),
        (["--worker-id", "   "], "--worker-id '   ': a worker id is not blank"),
        (["--worker-id", "gpu-0 "], "--worker-id 'gpu-0 ': a worker id has no spaces at its ends"),
        (["--worker-id", " gpu-0"], "a worker id has no spaces at its ends"),
        (["--worker-id", "gpu-0\n"], "a worker id is printable characters only"),
        # its name "a/b/581a63fe" reads as the id a and the hex b
        (["--worker-id", "a/b"], """--worker-id 'a/b': a worker id holds no "/": a worker's name is its id"""),
        (["--worker-id", "w\nx"], "--worker-id 'w\\nx': a worker id is printable characters only"),
    ],
)
def test_worker_refuses_flags_it_would_ignore_or_fail_on(argv, says):
    with pytest.raises(UsageError, match=re.escape(says)):
        check_worker_args(build_parser().parse_args(WORKER + argv))


@pytest.mark.parametrize("count", ["1", "4"])
def test_a_sim_worker_refuses_an_embedder_it_has_no_table_for_naming_the_variable(count, monkeypatch):
    """ARGUS_SIM_SIMILARITY_TABLE names the engine's embedder to a sim worker started by hand: a typo (CLIP) ended a
    worker, or a fleet, in a KeyError traceback as it built its backend."""
    monkeypatch.setenv(SIM_SIMILARITY_TABLE_ENV, "CLIP")
    says = "ARGUS_SIM_SIMILARITY_TABLE 'CLIP': no bundled similarity table for that embedder (clip, hash, minilm)"
    with pytest.raises(UsageError, match=f"^{re.escape(says)}"):
        check_worker_args(build_parser().parse_args([*WORKER, "--backend", "sim", "--count", count]))


@pytest.mark.parametrize(
    "argv",
    [
        # a variable left unset read as the flag left out: no CURVE, a bundled profile, the default model
        ["serve", "--curve-secret", "", "--curve-allow", ""],
        ["serve", "--curve-secret", "{keys}/engine.key_secret", "--curve-allow", "{keys}", "--curve-allow-workers", ""],
        ["serve", "--latency-profile", ""],
        ["serve", "--quality-profile", ""],
        ["serve", "--predictor", ""],
        ["serve", "--embedder", "minilm", "--embedder-path", ""],
        ["serve", "--launcher", "ray", "--ray-address", ""],
        ["serve", "--model", ""],
        ["serve", "--forwarded-allow-ips", ""],
        # read as the current directory: ".: Is a directory", naming no flag
        ["serve", "--api-keys", ""],
        [*WORKER, "--curve-key", "", "--curve-server-key", ""],
        [*WORKER, "--model", ""],
    ],
    ids=lambda argv: argv[argv.index("") - 1],
)
def test_an_empty_value_is_refused_naming_its_flag(argv, tmp_path):
    create_key_files(str(tmp_path), "engine")
    args = build_parser().parse_args([part.replace("{keys}", str(tmp_path)) for part in argv])
    flag = argv[argv.index("") - 1]
    with pytest.raises(UsageError, match=f"^{flag} (is empty|names no address) \\(a variable left unset\\?\\)"):
        engine_config(args) if argv[0] == "serve" else check_worker_args(args)


@pytest.mark.parametrize(
    "argv",
    [
        # read as the current directory, ".", or as no path at all: an error naming "." or nothing, not the flag
        ["keys", "--dir", ""],
        ["calibrate", "--embedder", "hash", "--prompts", ""],
        ["calibrate", "--embedder", "minilm", "--model-path", "", "--prompts", "p.txt"],
        ["train-predictor", "", "--out", "{tmp}/p.json"],
        ["train-predictor", "s.jsonl", "--similarity-table", "", "--out", "{tmp}/p.json"],
        ["profile", "quality", "", "--clip", "clip", "--out", "{tmp}/q.jsonl"],
        ["profile", "quality", "p.txt", "--clip", "", "--out", "{tmp}/q.jsonl"],
        # read as no --model: the tiny backend was profiled, minutes of it, and its profile written
        ["profile", "quality", "p.txt", "--clip", "clip", "--model", "", "--out", "{tmp}/q.jsonl"],
        ["profile", "latency", "--model", "", "--out", "{tmp}/p.json"],
        ["bench", "compare", "--trace", ""],
        ["bench", "compare", "--prompts", ""],
        # kept no logs (a temporary folder's), wrote no records
        ["bench", "compare", "--log-dir", ""],
        ["bench", "compare", "--records-dir", ""],
        ["bench", "cache", "--replay", ""],  # ran the index benchmark
        ["bench", "cache", "--data", ""],
        ["bench", "cache", "--replay", "p.txt", "--similarity-table", ""],
    ],
    ids=lambda argv: " ".join(argv[: argv.index("")]),
)
def test_a_file_or_folder_given_empty_to_an_offline_command_is_refused_naming_it(argv, tmp_path, capsys):
    assert main([part.replace("{tmp}", str(tmp_path)) for part in argv]) == 2
    before = argv[argv.index("") - 1]
    flag = before if before.startswith("--") else {"train-predictor": "samples", "quality": "prompts"}[before]
    err = capsys.readouterr().err
    fix = "give its value, or leave the flag out" if flag.startswith("--") else "give its value"
    assert err.endswith(f": error: {flag} is empty (a variable left unset?): {fix}\n")
    assert err.count("\n") == 1, err


def test_worker_accepts_the_longest_id_that_fits():
    check_worker_args(build_parser().parse_args([*WORKER, "--worker-id", "w" * 246]))
    check_worker_args(
        build_parser().parse_args([*WORKER, "--backend", "sim", "--count", "10", "--worker-id", "w" * 244])
    )


def test_a_fleet_honours_die_with_parent(monkeypatch):
    from workers import fleet

    called = {}

    def serve_until_stopped(runner, owned):
        called["owned"] = owned
        return 0

    monkeypatch.setattr(fleet, "Fleet", lambda *args, **kwargs: "fleet")
    monkeypatch.setattr(fleet, "exit_with_parent", lambda: called.setdefault("exit_with_parent", True))
    monkeypatch.setattr(fleet, "serve_until_stopped", serve_until_stopped)
    assert main([*WORKER, "--backend", "sim", "--count", "3", "--die-with-parent"]) == 0
    assert called == {"exit_with_parent": True, "owned": True}


# an SD-XL base folder's parts as model_index.json names them, and the file each holds beside its config: a model's
# weights, a tokenizer's vocabulary (tokenizer holds vocab.json and merges.txt, as SD-XL base's; tokenizer_2 the one
# tokenizer.json transformers saves)
SDXL_PARTS = {
    "unet": (["diffusers", "UNet2DConditionModel"], "diffusion_pytorch_model.safetensors"),
    "vae": (["diffusers", "AutoencoderKL"], "diffusion_pytorch_model.safetensors"),
    "text_encoder": (["transformers", "CLIPTextModel"], "model.safetensors"),
    "text_encoder_2": (["transformers", "CLIPTextModelWithProjection"], "model.safetensors"),
    "tokenizer": (["transformers", "CLIPTokenizer"], "vocab.json"),
    "tokenizer_2": (["transformers", "CLIPTokenizer"], "tokenizer.json"),
    "scheduler": (["diffusers", "EulerDiscreteScheduler"], None),
}


# a .safetensors file holding no tensor: its header's length, and its header
NO_TENSORS = (2).to_bytes(8, "little") + b"{}"


def sdxl_checkpoint(tmp_path, index_changes: dict | None = None) -> str:
    """A folder laid out as a diffusers SD-XL base checkpoint (the check reads no tensor: the files hold none);
    `index_changes` edits its model_index.json (None drops a key)."""
    index = {"_class_name": "StableDiffusionXLPipeline", "image_encoder": [None, None]}
    for part, (names, weights) in SDXL_PARTS.items():
        index[part] = names
        (tmp_path / part).mkdir()
        if weights:
            config = "tokenizer_config.json" if part.startswith("tokenizer") else "config.json"
            (tmp_path / part / config).write_text("{}")
            (tmp_path / part / weights).write_bytes(NO_TENSORS if weights.endswith(".safetensors") else b"")
    (tmp_path / "tokenizer" / "merges.txt").write_text("")
    (tmp_path / "scheduler" / "scheduler_config.json").write_text("{}")
    write_unet_config(tmp_path, 4)
    index.update(index_changes or {})
    (tmp_path / "model_index.json").write_text(json.dumps({k: v for k, v in index.items() if v is not None}))
    return str(tmp_path)


def unmake(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def write_unet_config(folder: Path, in_channels: int) -> None:
    (folder / "unet" / "config.json").write_text(json.dumps({"in_channels": in_channels}))


# SD-XL's own pipeline loaded the first four (a refiner with no first text encoder, SD 1.5 with no second, an
# inpainting UNet) and failed every batch; the rest it failed to load, as every worker started, with a traceback
NOT_SDXL_BASE = {
    "refiner": (
        {"_class_name": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [None, None], "tokenizer": [None, None]},
        None,
        "its model_index.json (StableDiffusionXLImg2ImgPipeline) names no text_encoder, tokenizer",
    ),
    "sd15": (
        {"_class_name": "StableDiffusionPipeline", "text_encoder_2": None, "tokenizer_2": None},
        None,
        "names no text_encoder_2, tokenizer_2",
    ),
    "inpainting": (
        {"_class_name": "StableDiffusionXLInpaintPipeline"},
        lambda folder: write_unet_config(folder, 9),
        "its unet takes 9 input channels, not 4",
    ),
    "sd3": ({"_class_name": "StableDiffusion3Pipeline", "unet": None}, None, "names no unet"),
    "no vae folder": ({}, lambda folder: unmake(folder / "vae"), "lacks vae/"),
    "no folder for a part beyond SD-XL base's": (
        {"image_encoder": ["transformers", "CLIPVisionModelWithProjection"]},
        None,
        "lacks image_encoder/ (named in its model_index.json)",
    ),
    "no unet weights": (
        {},
        lambda folder: unmake(folder / "unet" / "diffusion_pytorch_model.safetensors"),
        "unet holds no weights",
    ),
    "no config": ({}, lambda folder: unmake(folder / "text_encoder_2" / "config.json"), "holds no config.json"),
    "no scheduler config": (
        {},
        lambda folder: unmake(folder / "scheduler" / "scheduler_config.json"),
        "scheduler holds no scheduler_config.json",
    ),
}


@pytest.mark.parametrize(("index_changes", "spoil", "says"), NOT_SDXL_BASE.values(), ids=NOT_SDXL_BASE)
def test_a_folder_that_is_not_sdxl_base_is_refused_before_any_worker_starts(
    index_changes, spoil, says, tmp_path, capsys
):
    path = sdxl_checkpoint(tmp_path, index_changes)
    if spoil:
        spoil(tmp_path)
    with pytest.raises(UsageError, match=re.escape(says)):
        engine_config(build_parser().parse_args(["serve", "--backend", "sdxl", "--workers", "1", "--model", path]))
    assert main([*WORKER, "--backend", "sdxl", "--model", path]) == 2
    assert capsys.readouterr().err.startswith("argus worker: error: --model: ")


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("gone", "SD-XL model directory"),  # a typo
        ("empty", "holds no model_index.json"),  # a folder of weights, not a diffusers checkpoint
        # a single-file checkpoint: from_single_file(FILE) alone fetches SD-XL's configs from the hub, which fails
        # offline
        ("sd_xl_base_1.0.safetensors", "is a file: argus loads a diffusers folder"),
        ("sd_xl_base_1.0.safetensors", "from_single_file(FILE, config=CONFIG).save_pretrained(DIR), CONFIG a"),
        # a folder made for the single file: said to hold no model_index.json alone, with no way on
        ("single", "holds sd_xl_base_1.0.safetensors, a single-file checkpoint, and no model_index.json; convert"),
        ("single/model_index.json", "is a file: pass the diffusers folder that holds it, "),
    ],
)
def test_an_sdxl_model_folder_that_cannot_load_is_refused_before_any_worker_starts(model, says, tmp_path, capsys):
    """Each worker imported torch and diffusers for seconds, then failed with a traceback; an engine restarted its
    workers so for ever, never ready."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "sd_xl_base_1.0.safetensors").write_bytes(b"")
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "sd_xl_base_1.0.safetensors").write_bytes(b"")
    if model.endswith(".json"):
        (tmp_path / "single" / "model_index.json").write_text("{}")
    path = str(tmp_path / model)
    with pytest.raises(UsageError, match=re.escape(says)):
        engine_config(build_parser().parse_args(["serve", "--backend", "sdxl", "--workers", "1", "--model", path]))
    assert main([*WORKER, "--backend", "sdxl", "--model", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("argus worker: error: --model: ") and repr(path) in err
    # Ray places its actors on other hosts: the folder need not be on this one
    engine_config(
        build_parser().parse_args(
            ["serve", "--backend", "sdxl", "--workers", "1", "--model", path, "--launcher", "ray"]
        )
    )


def test_a_model_path_whose_tilde_no_shell_expanded_names_the_folder_meant(tmp_path, monkeypatch, capsys):
    """bash expands a ~ at a word's start alone: `--model=~/sdxl` reached argus as it was typed, and was said not to
    exist, as a typo would be, though the user's home folder held it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "sdxl").mkdir()
    model = sdxl_checkpoint(tmp_path / "sdxl")
    says = "--model: '~/sdxl' does not exist: no shell expanded its ~ (bash expands one at a word's start alone, not"
    says += f" after an =); pass {model!r}"
    with pytest.raises(UsageError) as refused:
        engine_config(build_parser().parse_args(["serve", "--backend", "sdxl", "--workers", "1", "--model=~/sdxl"]))
    assert str(refused.value) == says
    assert main([*WORKER, "--backend", "sdxl", "--model=~/sdxl"]) == 2
    assert capsys.readouterr().err == f"argus worker: error: {says}\n"


def test_an_sdxl_worker_needs_a_model(tmp_path):
    with pytest.raises(UsageError, match=re.escape("--backend sdxl needs --model DIR")):
        check_worker_args(build_parser().parse_args([*WORKER, "--backend", "sdxl"]))
    model = sdxl_checkpoint(tmp_path)
    check_worker_args(build_parser().parse_args([*WORKER, "--backend", "sdxl", "--model", model]))
    engine_config(build_parser().parse_args(["serve", "--backend", "sdxl", "--workers", "1", "--model", model]))


@pytest.mark.parametrize("backend", ["tiny", "sdxl", "sim"])
def test_the_engines_own_worker_command_passes_the_worker_checks(backend, tmp_path):
    launch = LaunchConfig(
        backend=backend, model=sdxl_checkpoint(tmp_path), time_scale=0.5, log_level="WARNING", log_format="json"
    )
    command = worker_command(launch.worker_config("ipc:///tmp/w", slot=0, threads=1))
    check_worker_args(build_parser().parse_args(command[command.index("engine.cli") + 1 :]))
    assert command[command.index("engine.cli") + 1 :][:5] == [
        "--log-level",
        "WARNING",
        "--log-format",
        "json",
        "worker",
    ]
    assert ("--time-scale" in command) == ("--sim-latents" in command) == (backend == "sim")
    assert (f"--model={launch.model}" in command) == (backend == "sdxl")
    assert ("--device" in command) == (backend != "sim")  # the sim worker refuses one: it runs no model
    assert ("--threads" in command) == (backend != "sim")  # and --threads: its model's CPU threads


# an input file a command cannot use, made in a temporary directory: (name, how it is made, what the error says)
BAD_INPUTS = {
    "missing": ("gone.txt", lambda path: None, "No such file or directory"),
    "a directory": ("folder.txt", lambda path: path.mkdir(), "Is a directory"),
    "not UTF-8": ("latin1.txt", lambda path: path.write_bytes(b"caf\xe9\n"), "can't decode byte 0xe9"),
    "not JSON": ("broken.json", lambda path: path.write_text('["a", '), "Expecting value"),
    "not a list": ("dict.json", lambda path: path.write_text('{"a": 1}'), "expected a JSON list of strings"),
    "no Prompt column": ("columns.tsv", lambda path: path.write_text("x\ty\n1\t2\n"), "no 'Prompt' column"),
    "not JSONL": ("samples.jsonl", lambda path: path.write_text("not json\n"), "Expecting value"),
    # bench cache --replay divided by zero; calibrate said "need at least 2 prompts, got 0" (or, for blank lines,
    # ran on them as empty prompts), where loadgen reads the same files as no prompts
    "empty": ("empty.txt", lambda path: path.write_bytes(b""), "no prompts"),
    "blank lines only": ("blank.txt", lambda path: path.write_text("\n \n\t\n"), "no prompts"),
    # calibrate read it as one prompt a line
    "not a prompt format": ("prompts.csv", lambda path: path.write_text("a red fox\n"), "prompts come as .txt"),
}
# the commands that read a prompt file, all by loadgen/prompts.py: the same prompts and the same errors
PROMPT_FILE_ERRORS = BAD_INPUTS.keys() - {"not JSONL"}
COMMANDS_READING = [
    (["calibrate", "--embedder", "hash", "--reference", "nirvana", "--prompts"], PROMPT_FILE_ERRORS),
    (["bench", "cache", "--replay"], PROMPT_FILE_ERRORS),
    (["profile", "quality", "--clip", "clip", "--out", "{tmp}/q.jsonl"], PROMPT_FILE_ERRORS),
    (["train-predictor", "--out", "{tmp}/model.json"], {"missing", "not JSONL", "a directory"}),
]


@pytest.mark.parametrize(
    ("argv", "bad"),
    [
        pytest.param(argv, bad, id=f"{command_name(argv)}: {bad}")
        for argv, cases in COMMANDS_READING
        for bad in sorted(cases)
    ],
)
def test_an_input_file_that_cannot_be_used_is_one_line_naming_it(argv, bad, tmp_path, capsys):
    name, make, says = BAD_INPUTS[bad]
    path = tmp_path / name
    make(path)
    # the file goes last: --prompts' value, or the positional argument after the options
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    assert main([*argv, str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"{command_name(argv)}: error: {path}") and says in error
    assert error.count("\n") == 1  # one line, no traceback


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        # `profile quality --backend sim` was one too; sim is no longer among its choices (test_profile_quality)
        (["calibrate", "--embedder", "hash", "--reference", "hash", "--prompts", "{prompts}"], "must differ"),
    ],
)
def test_flags_an_offline_command_cannot_run_with_are_a_usage_error(argv, says, tmp_path, capsys):
    """Before, these exited 1, as a failed run does, where every other usage error exits 2."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na blue whale\n")
    assert main([arg.format(tmp=tmp_path, prompts=prompts) for arg in argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"{command_name(argv)}: error: ") and says in error


def test_train_predictor_offers_the_embedders_it_has_tables_for(tmp_path, capsys):
    """Another name was a KeyError traceback, exit 1, once the samples had been read and the predictor fit."""
    samples = tmp_path / "samples.jsonl"
    rows = [{"similarity": 0.6 + i / 50, "level": 10, "quality": 90.0 + i, "prompt": "a red fox"} for i in range(12)]
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(SystemExit) as exited:
        main(["train-predictor", str(samples), "--out", str(tmp_path / "p.json"), "--embedder", "foo"])
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("argus train-predictor: error: argument --embedder: invalid choice: 'foo'")
    assert all(name in error for name in ("hash", "minilm", "clip"))


@pytest.mark.parametrize(
    ("argv", "defaults"),
    [
        (["bench", "compare"], ("trace", "prompts")),
        (["loadgen"], ("prompts",)),
    ],
)
def test_the_shared_data_a_command_reads_by_default_is_found_from_any_directory(argv, defaults, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: `argus bench compare` from the README failed its input check here
    args = build_parser().parse_args(argv)
    for name in defaults:
        assert Path(getattr(args, name)).exists(), (name, getattr(args, name))


def test_bench_cache_finds_its_prompt_folder_from_any_directory(tmp_path, monkeypatch):
    """Its --data is None unless given (a replay refuses it), the default filled in at run time."""
    monkeypatch.chdir(tmp_path)
    assert Path(cache_bench.INDEX_DEFAULTS["data"], "diffusiondb_5k.txt").exists()


def test_as_many_devices_as_workers_are_taken_and_a_device_named_twice_is_one():
    argv = ["serve", "--workers", "2", "--device", "cpu", "--device", "cpu", "--device", "cpu"]
    assert engine_config(build_parser().parse_args(argv)).launch.devices == ("cpu", "cpu", "cpu")


def test_the_launch_timeouts_left_unset_take_their_defaults():
    config = engine_config(build_parser().parse_args(["serve"]))
    assert (config.launch.startup_timeout_s, config.ray_connect_timeout_s) == (180.0, 60.0)


@pytest.mark.parametrize("workers", [0, 2])
def test_max_connections_the_limit_on_open_files_leaves_no_room_for_is_refused(workers):
    """The engine ran out of files before the bound was reached: no worker started again, no /health answered. A bound
    of the hard limit itself was let through with a warning, where the engine's own files (29 at start) and its
    workers' take some of it: the bound could never be reached."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    fit = hard - open_files.ENGINE_OWN_FILES - workers * open_files.FILES_PER_WORKER
    serve = ["serve", "--backend", "sim", "--workers", str(workers)]
    for refused in (hard + 1, hard, fit + 1):
        says = (
            f"--max-connections {refused:,} would run the engine out of open files before it is reached: this process"
            f" may hold {hard:,} (ulimit -Hn), and the engine keeps about {open_files.ENGINE_OWN_FILES} of its own and"
            f" {open_files.FILES_PER_WORKER} for each of --workers {workers}, which leaves {fit:,}: give at most that"
        )
        with pytest.raises(UsageError, match=f"^{re.escape(says)}"):
            engine_config(build_parser().parse_args([*serve, "--max-connections", str(refused)]))
    assert engine_config(build_parser().parse_args([*serve, "--max-connections", str(fit)])).max_connections == fit


def test_the_engine_asks_for_the_open_files_its_max_connections_hold(monkeypatch):
    """Raised to 65,536 whatever the bound, a larger one ran out of files before it was reached."""
    asked = []
    monkeypatch.setattr(open_files, "allow_open_files", lambda needed: asked.append(needed) or True)
    open_files.allow_engine_open_files(2, 1024, max_connections=200_000)
    open_files.allow_engine_open_files(2, 1024)
    assert asked == [
        200_000 + 2 * open_files.FILES_PER_WORKER + open_files.SPARE_OPEN_FILES,
        open_files.ENGINE_OPEN_FILES,
    ]


@pytest.mark.parametrize("level", [[], ["--log-level", "CRITICAL"]], ids=["default", "critical"])
def test_under_log_format_json_the_error_a_command_ends_on_is_a_json_record(tmp_path, level):
    """A log collector reading --log-format json could not parse the one line that said why the engine stopped; and
    the line is there at any --log-level, as the plain one is (at CRITICAL the record was dropped: exit 2, no word)."""
    serve = ["serve", "--workers", "0", "--no-cache", "--predictor", str(tmp_path / "p.json")]
    argv = [*level, "--log-format", "json", *serve]
    done = subprocess.run([sys.executable, "-m", "engine", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert records[-1]["level"] == "ERROR" and records[-1]["message"] == (
        "argus serve: error: --no-cache keeps no prompt cache: drop --predictor"
    )


def test_a_refusal_standard_error_cannot_take_still_exits_2(tmp_path):
    """Its line's print to a full disk (or a pipe whose reader went away) raised, and the command ended with 1."""
    command = [sys.executable, "-m", "engine", "keys", "--dir", str(tmp_path), "--name", "../elsewhere"]
    with open("/dev/full", "w") as full:
        assert subprocess.run(command, stderr=full, timeout=60).returncode == 2


# Python's standard output is written through at once under PYTHONUNBUFFERED, else at exit: a failure is the
# command's either way
STANDARD_OUTPUT_BUFFERING = pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])


def keys_made_writing_to(stdout, folder: Path, unbuffered: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    command = [sys.executable, "-m", "engine", "keys", "--dir", str(folder)]
    done = subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, text=True, env=environment, timeout=60)
    assert sorted(path.name for path in folder.iterdir()) == ["engine.key", "engine.key_secret"]
    return done


@STANDARD_OUTPUT_BUFFERING
def test_a_command_whose_output_reader_went_away_ends_without_a_traceback(tmp_path, unbuffered):
    """`argus keys | head -0`: the print of what it made raised BrokenPipeError, a traceback after the pair was made."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = keys_made_writing_to(writer, tmp_path, unbuffered)
    finally:
        os.close(writer)
    assert (done.returncode, done.stderr) == (1, "")


@STANDARD_OUTPUT_BUFFERING
def test_a_command_whose_output_is_a_full_disk_says_so_in_a_line(tmp_path, unbuffered):
    """`argus keys > /dev/full`: a traceback of the print it was in (or, buffered, an exception ignored at exit,
    exit 120), where which stream failed is all there is to say."""
    with open("/dev/full", "w") as full:
        done = keys_made_writing_to(full, tmp_path, unbuffered)
    said = "argus keys: error: writing to the standard output: No space left on device\n"
    assert (done.returncode, done.stderr) == (1, said)
