"""One model on every worker, by content: a worker whose model differs from the engine's is refused at its hello,
naming both; the saved prompt cache is restored only for the model that made it. Through real engines and sdxl
workers, each model a tiny pipeline saved as a diffusers folder: two seeds are two models of one shape (the same
configs and weight sizes, as a fine-tune has), and the same seed saved twice is one model at two paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from engine.cli import main
from engine.client import ArgusClient
from engine_process import ROOT, free_port, start_engine, start_worker
from protocols.client_messages import Images
from workers.model_id import folder_model_id

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Folders a (seed 0), a_copy (seed 0, saved apart) and b (seed 1)."""
    from workers.tiny_pipeline import build_tiny_sdxl

    root = tmp_path_factory.mktemp("models")
    for name, seed in (("a", 0), ("a_copy", 0), ("b", 1)):
        build_tiny_sdxl(seed).save_pretrained(root / name)
    return {name: str(root / name) for name in ("a", "a_copy", "b")}


def test_a_model_is_named_by_its_content_not_its_path(models):
    assert folder_model_id(models["a"]) == folder_model_id(models["a_copy"]) != folder_model_id(models["b"])


# builds the tiny model, saves it to argv[1] and prints its identity as a worker names it
_NAME_IN_A_PROCESS = """
import sys
from workers.config import WorkerConfig
from workers.main import load_backend
from workers.tiny_pipeline import build_tiny_sdxl
build_tiny_sdxl().save_pretrained(sys.argv[1])
print(load_backend(WorkerConfig("tcp://127.0.0.1:9", "w", backend="tiny")).describe().model_id)
"""


@pytest.fixture(scope="module", autouse=True)
def named_in_two_processes(tmp_path_factory):
    """Two processes that each save the tiny model in a folder of their own here and name it, under hash seeds 1 and 2,
    started with the module: each spends seconds importing torch and diffusers, beside the other tests. Yields that
    folder and the two processes."""
    folder = tmp_path_factory.mktemp("named")
    naming = [
        subprocess.Popen(
            [sys.executable, "-c", _NAME_IN_A_PROCESS, str(folder / hash_seed)],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for hash_seed in ("1", "2")
    ]
    yield folder, naming
    for process in naming:
        process.kill()
        process.wait()


def sdxl_worker(address: str, model: str, worker_id: str) -> subprocess.Popen:
    return start_worker(address, "sdxl", "--model", model, "--worker-id", worker_id, stderr=subprocess.PIPE, text=True)


def refused(worker: subprocess.Popen) -> str:
    """What the worker said as it ended, refused (exit 2)."""
    try:
        _, err = worker.communicate(timeout=180)
    finally:
        worker.kill()
    assert worker.returncode == 2, err
    return err


def stop(worker: subprocess.Popen) -> None:
    worker.terminate()
    worker.communicate(timeout=60)


@pytest.fixture(scope="module")
def copy_port(models):
    """The worker port of a worker of model a at another path (a_copy, worker id "copy"), started by hand once for the
    tests that need one welcomed: it serves each engine a test starts on that port in turn (a hand-started worker
    outlives its engine, and says hello to the next), so its model loads once."""
    port = free_port()
    worker = sdxl_worker(f"tcp://127.0.0.1:{port}", models["a_copy"], "copy")
    yield port
    stop(worker)


def generate(engine, **fields) -> Images:
    # 10 steps: the fewest whose run leaves a latent a later request may resume from (step 5, half of it: level 25),
    # so that a prompt served enters the cache
    with ArgusClient(engine.client_address, timeout_s=300) as client:
        reply = client.generate(PROMPT, width=512, height=512, steps=10, seed=1, **fields)
    assert isinstance(reply, Images), reply
    return reply


def test_a_worker_of_another_model_is_refused_naming_both(models, copy_port, tmp_path):
    """Before, both workers were welcomed, and the cache fed the latents one model made to the other: wrong images,
    no error. The engine reads its --model on this host: a copy at another path is the same model."""
    engine = start_engine(
        tmp_path, "--model", models["a"], backend="sdxl", workers=0, wait=False, worker_port=copy_port
    )
    served, other = folder_model_id(models["a"]), folder_model_id(models["b"])
    try:
        (worker,) = engine.wait_ready(1)["workers"]
        assert worker["name"].startswith("copy/")
        err = refused(sdxl_worker(engine.worker_address, models["b"], "other"))
        assert f"model {other!r}: this engine serves {served!r} (argus serve --backend/--model/--model-id)" in err
        assert "loading the sdxl backend" not in err  # asked before it loaded its model (minutes, for SD-XL)
        assert len(engine.ready()["workers"]) == 1
    finally:
        assert engine.stop() == 0


def test_a_model_replaced_in_place_does_not_restore_the_last_one_s_cache(models, tmp_path):
    """Before, the saved cache recorded the --model path: the same path holding another model restored the latents
    the last one made."""
    model, cache_dir = tmp_path / "model", tmp_path / "cache"
    shutil.copytree(models["a"], model)
    flags = ("--model", str(model), "--cache-dir", str(cache_dir))
    first = start_engine(tmp_path, *flags, backend="sdxl", workers=0, wait=False)
    first.wait_ready(0)
    assert first.stop() == 0
    shutil.rmtree(model)
    shutil.copytree(models["b"], model)
    second = start_engine(tmp_path, *flags, backend="sdxl", workers=0, wait=False)
    second.wait_ready(0)
    assert second.stop() == 0
    assert f"model {folder_model_id(models['a'])!r}; this cache uses" in second.log_path.read_text()
    [_set_aside] = cache_dir.glob("prompt_cache.argus.rejected-*")


def test_without_a_model_it_can_read_the_engine_serves_the_first_worker_s_and_restores_its_saved_cache(
    models, copy_port, tmp_path
):
    """An engine that cannot read the model serves its first worker's and refuses another, and restores the saved cache
    once its first worker names the model: a copy of the model at another path is served the saved latents, another
    model gets none."""
    flags = ("--cache-dir", str(tmp_path / "cache"), "--policy", "nirvana")
    # the worker of model b the last engine serves, started now on that engine's port: it loads its model (seconds of
    # imports) while the engines before it serve, and says hello once its engine is up
    b_port = free_port()
    b_worker = sdxl_worker(f"tcp://127.0.0.1:{b_port}", models["b"], "b")
    try:
        # the worker of a_copy, up already, the first this engine welcomes
        engine = start_engine(tmp_path, *flags, backend="sdxl", workers=0, wait=False, worker_port=copy_port)
        second = None
        try:
            engine.wait_ready(1)
            second = sdxl_worker(engine.worker_address, models["b"], "second")  # its imports overlap the generation
            assert generate(engine).images[0].similarity is None  # an empty cache: a miss, saved at the drain
            err = refused(second)
            served = folder_model_id(models["a"])
            assert f"this engine serves {served!r} (named by copy/" in err and "the first worker it welcomed" in err
        finally:
            if second is not None:
                second.kill()  # refused() reaped it, unless the generation failed first
            assert engine.stop() == 0
        for port, similarity in ((copy_port, pytest.approx(1.0)), (b_port, None)):
            engine = start_engine(tmp_path, *flags, backend="sdxl", workers=0, wait=False, worker_port=port)
            try:
                engine.wait_ready(1)
                assert generate(engine).images[0].similarity == similarity, port
            finally:
                assert engine.stop() == 0
    finally:
        stop(b_worker)
    assert f"model {folder_model_id(models['a'])!r}; this cache uses" in engine.log_path.read_text()


def test_an_engine_given_its_model_id_refuses_a_first_worker_of_another(models, tmp_path):
    """Named by its first worker, an engine that cannot read the model served whichever model came first, and
    refused every right worker after it until a restart."""
    served = folder_model_id(models["b"])
    # up before the worker starts: one started first finds no engine to ask before it loads, and learns at its hello
    engine = start_engine(tmp_path, "--model-id", served, backend="sdxl", workers=0)
    try:
        err = refused(sdxl_worker(engine.worker_address, models["a"], "first"))
        assert f"this engine serves {served!r} (argus serve --backend/--model/--model-id)" in err
        assert "loading the sdxl backend" not in err
        assert engine.ready()["workers"] == []
    finally:
        assert engine.stop() == 0


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--backend", "sim", "--model-id", "sim:xyz"], "not a sim model's identity"),
        (["--backend", "sdxl", "--model-id", "tiny:0123456789abcdef"], "not a sdxl model's identity"),
        (["--backend", "sdxl", "--model", "{a}", "--model-id", "{b}"], "is not the model of --backend sdxl --model"),
        (["--backend", "sim", "--model-id", "sim:0123456789abcdef"], "is not the model of --backend sim, which"),
    ],
)
def test_a_model_id_that_cannot_be_served_is_refused_at_start(models, flags, says, capsys):
    named = {"{a}": models["a"], "{b}": folder_model_id(models["b"])}
    assert main(["serve", "--workers", "0", *(named.get(flag, flag) for flag in flags)]) == 2
    assert says in capsys.readouterr().err


def test_one_model_has_one_identity_in_every_process(models, named_in_two_processes):
    """diffusers lists a config's fields left at their defaults in a set's order, which differs from one process
    to the next: an engine's two local tiny workers were refused as two models."""
    folder, naming = named_in_two_processes
    outputs = [process.communicate(timeout=300) for process in naming]
    named = []
    for process, (out, err) in zip(naming, outputs, strict=True):
        assert process.returncode == 0, err
        named.append(out.split()[-1])
    assert named[0] == named[1]
    assert folder_model_id(str(folder / "1")) == folder_model_id(str(folder / "2")) == folder_model_id(models["a"])
