"""`argus loadgen --zmq` against an engine with CURVE that will not take the loadgen's key: it ran its whole schedule,
each request refused (connection_refused), and ended 0; it ends at once, the refusal in one line, and exits 2, as for an
API key refused over HTTP (tests/test_loadgen_end_to_end.py)."""

import json

import pytest

from engine.cli import main as argus
from engine_process import start_engine
from loadgen import cli


def _keys(directory, name):
    assert argus(["keys", "--dir", str(directory), "--name", name]) == 0
    return str(directory / f"{name}.key"), str(directory / f"{name}.key_secret")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    engine_public, engine_secret = _keys(root, "engine")
    _, client_secret = _keys(root / "admitted", "client")
    _, stranger_secret = _keys(root / "strangers", "stranger")
    engine = (engine_public, engine_secret)
    return {"root": root, "engine": engine, "client": client_secret, "stranger": stranger_secret}


@pytest.fixture(scope="module")
def engine(tmp_path_factory, keys):
    curve = ("--curve-secret", keys["engine"][1], "--curve-allow", str(keys["root"] / "admitted"))
    engine = start_engine(tmp_path_factory.mktemp("curve"), "--time-scale", "0.02", *curve, workers=1, backend="sim")
    yield engine
    assert engine.stop() == 0


def _run(engine, *flags: str) -> int:
    # a schedule of a minute at 1/s: the run that went through it was its whole length
    return cli.main(["--zmq", engine.client_address, "--rate", "1", "--duration-s", "60", "--no-progress", *flags])


def test_a_key_the_engine_does_not_admit_ends_the_run_before_it_starts(engine, keys, capsys):
    code = _run(engine, "--curve-secret", keys["stranger"], "--curve-server-key", keys["engine"][0])
    assert code == 2
    err = capsys.readouterr().err
    assert err == (
        f"argus loadgen: error: --curve-secret {keys['stranger']}: the engine at {engine.client_address} does not"
        " admit this CURVE key on this socket (a worker's key goes in its --curve-allow-workers, or --curve-allow"
        " without it; a client's in its --curve-allow)\n"
    )
    assert engine.metric("argus_requests_total", outcome="ok", code="") == 0  # none sent


def test_no_key_for_an_engine_that_requires_one_ends_the_run_before_it_starts(engine, capsys):
    assert _run(engine) == 2
    err = capsys.readouterr().err
    assert err.startswith("argus loadgen: error: --zmq: ") and err.count("\n") == 1
    assert err.endswith(f"the engine at {engine.client_address} requires CURVE keys\n")


def test_an_admitted_key_runs(engine, keys, tmp_path):
    summary = tmp_path / "summary.json"
    code = cli.main([
        "--zmq", engine.client_address, "--curve-secret", keys["client"], "--curve-server-key", keys["engine"][0],
        "--rate", "10", "--max-requests", "2", "--size", "64x64", "--no-progress", "--json", str(summary),
    ])  # fmt: skip
    assert code == 0
    assert json.loads(summary.read_text())["outcomes"]["ok"] == 2
