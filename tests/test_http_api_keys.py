"""--api-keys: a key for each HTTP client, which names the client its requests are shared among the others as, whatever
they say of themselves (`user`); reread on SIGHUP, as the CURVE keys are."""

import dataclasses
import json
import re
import signal
import urllib.error
import urllib.request

import pytest
from waiting import wait_for

from engine.cli import build_parser, engine_config
from engine.commands.arg_types import UsageError
from engine.http.api_keys import ApiKeys, key_problem
from engine.server import Engine
from engine_process import in_process_config, start_engine

KEYS = "# the teams sharing the fleet\nalice alice-key-1\n\nbob   bob-key-2\n"


def keys_file(tmp_path, text: str = KEYS):
    path = tmp_path / "api-keys"
    path.write_text(text)
    return path


def test_a_key_names_its_holder_and_no_other_string_names_anyone(tmp_path):
    keys = ApiKeys.read(str(keys_file(tmp_path)))
    assert (keys.holder(b"alice-key-1"), keys.holder(b"bob-key-2")) == ("alice", "bob")
    assert [keys.holder(given) for given in (b"alice-key", b"alice-key-1 ", b"", b"alice")] == [None] * 4
    assert ApiKeys.single("s3cret").holder(b"s3cret") == ""  # --api-key's key: valid, and names no one


def test_only_the_keys_of_a_file_are_named_and_reread_on_sighup(tmp_path):
    """--api-key's one key has no file to reread: a SIGHUP tried to read the file None."""
    assert ApiKeys.read(str(keys_file(tmp_path))).named
    assert not ApiKeys.single("s3cret").named


def test_a_file_saved_with_a_byte_order_mark_names_its_first_holder(tmp_path):
    """Saved by an editor that starts UTF-8 with a BOM (Notepad), the file was refused: its first name read
    '\\ufeffalice', not a name."""
    path = tmp_path / "api-keys"
    path.write_text(KEYS, encoding="utf-8-sig")
    assert ApiKeys.read(str(path)).holder(b"alice-key-1") == "alice"


@pytest.mark.parametrize("control", ["\x00", "\x1f", "\x7f"], ids=["NUL", "unit-separator", "DEL"])
def test_every_control_character_makes_a_key_no_client_can_send(control):
    assert "control character" in key_problem(f"a{control}key")
    assert key_problem("a~key") is None


def test_an_indented_comment_is_a_comment(tmp_path):
    keys = ApiKeys.read(str(keys_file(tmp_path, "  # rotated monthly\nalice alice-key-1\n")))
    assert keys.holder(b"alice-key-1") == "alice"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("alice\n", "line 1: expected NAME KEY, got 1 field"),
        ("alice a-key more\n", "line 1: expected NAME KEY, got 3 fields"),
        ("# no one yet\n\n", "no key (lines of NAME KEY)"),
        ("al/ice a-key\n", "line 1: the name, its first field (not shown: it may be a key), must be 1 to 64 of"),
        ("-alice a-key\n", "line 1: the name, its first field (not shown: it may be a key), must be 1 to 64 of"),
        ("a" * 65 + " a-key\n", "line 1: the name, its first field (not shown: it may be a key), must be 1 to 64 of"),
        ("alice a-key\nalice b-key\n", "line 2: alice is named twice"),
        ("alice a-key\nbob a-key\n", "line 2: bob's key is alice's too: a key names one client"),
        ("alice a\x01key\n", "line 1: the key starts or ends with a space or holds a control character"),
        ("alice cl\u00e9\n", "line 1: the key holds 'é', which is not ASCII: HTTP clients send it as different bytes"),
    ],
)
def test_a_file_no_engine_could_serve_with_is_refused_naming_the_line(tmp_path, text, says):
    path = keys_file(tmp_path, text)
    with pytest.raises(UsageError) as refused:
        engine_config(build_parser().parse_args(["serve", "--api-keys", str(path)]))
    assert str(refused.value).startswith(str(path)) and says in str(refused.value), refused.value


def test_lines_are_numbered_as_an_editor_numbers_them(tmp_path):
    """Only a newline ends a line: a vertical tab or a file separator in one (as str.splitlines reads them) split it
    in two, refused as a line of 1 field, and every error after it named a line too far on."""
    path = keys_file(tmp_path, "alice\x0balice-key-1\nbob\x1cbob-key-1\ncarol\n")
    with pytest.raises(UsageError, match="line 3: expected NAME KEY, got 1 field$"):
        ApiKeys.read(str(path))
    keys = ApiKeys.read(str(keys_file(tmp_path, "alice\x0balice-key-1\nbob\x1cbob-key-1\n")))
    assert (keys.holder(b"alice-key-1"), keys.holder(b"bob-key-1")) == ("alice", "bob")


def test_a_line_written_key_first_is_refused_without_the_key(tmp_path, caplog):
    """The first field was quoted as the name it should be: a line written KEY NAME put the key in the error, on the
    terminal at start and in the log at a SIGHUP."""
    key = "q1Yh/8rT+w3Z_kP0aV9c2mX=="  # as `openssl rand -base64` and secrets.token_urlsafe make them
    keys = ApiKeys.read(str(keys_file(tmp_path)))
    keys_file(tmp_path, f"{key} alice\n")
    with pytest.raises(UsageError) as refused:
        engine_config(build_parser().parse_args(["serve", "--api-keys", str(tmp_path / "api-keys")]))
    with pytest.raises(UsageError) as not_reloaded:
        keys.reload()
    for error in (refused, not_reloaded):
        assert "line 1: the name, its first field" in str(error.value) and key not in str(error.value)
    assert keys.holder(b"alice-key-1") == "alice"  # the keys until then still hold


@pytest.mark.parametrize(
    ("mode", "warned"),
    [(0o644, "readable by other users (mode 0644)"), (0o620, "writable by other users (mode 0620)"), (0o600, None)],
)
def test_a_keys_file_other_users_may_read_or_write_is_warned_of_at_start_and_at_each_reread(
    tmp_path, caplog, mode, warned
):
    """It was taken without a word, while a CURVE secret key file so open was warned of: whoever reads it can pose
    as any client it names."""
    path = keys_file(tmp_path)
    path.chmod(mode)
    keys = engine_config(build_parser().parse_args(["serve", "--api-keys", str(path)])).api_keys
    keys.reload()
    said = [r.getMessage() for r in caplog.records if r.name == "argus.engine" and r.levelname == "WARNING"]
    if warned is None:
        assert said == []
    else:
        assert said == [f"{path} is {warned}: whoever reads it can pose as any client it names, and whoever"
                        " writes it can put in a key of their own; chmod 600 it"] * 2  # fmt: skip


def test_a_missing_file_or_a_key_given_both_ways_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("ARGUS_API_KEY", raising=False)
    with pytest.raises(UsageError, match="No such file or directory"):
        engine_config(build_parser().parse_args(["serve", "--api-keys", str(tmp_path / "none")]))
    path = str(keys_file(tmp_path))
    with pytest.raises(UsageError, match=re.escape("--api-key and --api-keys: give one (name --api-key's key in")):
        engine_config(build_parser().parse_args(["serve", "--api-keys", path, "--api-key", "s3cret"]))
    assert engine_config(build_parser().parse_args(["serve", "--api-keys", path])).api_keys.named


@pytest.mark.parametrize(
    ("argv", "environment", "says"),
    [
        # it said "--api-key (or $ARGUS_API_KEY) and --api-keys: give one", of a flag not given and a key not set
        ([], {"ARGUS_API_KEY": ""}, "$ARGUS_API_KEY is empty, and --api-keys names the keys: unset ARGUS_API_KEY"),
        ([], {"ARGUS_API_KEY": "s3cret"}, "$ARGUS_API_KEY and --api-keys: give one (name $ARGUS_API_KEY's key in"),
        (["--api-key", ""], {}, "--api-key is empty, and --api-keys names the keys: leave --api-key out"),
    ],
)
def test_a_key_beside_the_keys_file_is_refused_naming_where_it_came_from(
    argv, environment, says, tmp_path, monkeypatch
):
    monkeypatch.delenv("ARGUS_API_KEY", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError) as refused:
        engine_config(build_parser().parse_args(["serve", "--api-keys", str(keys_file(tmp_path)), *argv]))
    assert str(refused.value).startswith(says), refused.value


def test_the_engine_serves_with_the_keys_that_were_checked_not_a_second_read_of_the_file(tmp_path):
    path = keys_file(tmp_path)
    config = engine_config(build_parser().parse_args(["serve", "--api-keys", str(path), "--no-cache"]))
    path.write_text("carol carol-key-3\n")  # changed after the check: a second read would load keys never checked
    local = in_process_config(tmp_path)
    engine = Engine(
        dataclasses.replace(
            config, port=0, launch=local.launch, client_listen=local.client_listen, worker_listen=local.worker_listen
        )
    )
    try:
        assert (engine.api_keys.holder(b"alice-key-1"), engine.api_keys.holder(b"carol-key-3")) == ("alice", None)
    finally:
        engine.close()


def post(engine, key: str | None, user: str | None = None) -> int:
    body = {"prompt": "a lighthouse", "size": "64x64", **({"user": user} if user else {})}
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(engine.http + "/v1/images/generations", json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.timeout(120)
def test_each_key_names_one_client_and_a_sighup_rereads_them(tmp_path):
    path = keys_file(tmp_path)
    # SIMULATED workers; a request counts among the clients sharing the fleet for an SLO after it was routed
    engine = start_engine(
        tmp_path,
        "--api-keys",
        str(path),
        "--time-scale",
        "0",
        "--slo-ms",
        "60000",
        workers=1,
        backend="sim",
        wait=False,
    )
    engine.api_key = "alice-key-1"  # what the test reads /ready and /metrics with
    try:
        engine.wait_ready(workers=1)
        assert [post(engine, key) for key in (None, "wrong", "alice-key-", "bob-key-2")] == [401, 401, 401, 200]
        # alice names three end users: still one client, beside bob (they were four)
        assert [post(engine, "alice-key-1", user) for user in ("u1", "u2", "u3")] == [200] * 3
        assert engine.metric("argus_sharing_clients") == 2

        def hang_up(outcome: str) -> None:
            before = engine.log().count(outcome)
            engine.process.send_signal(signal.SIGHUP)
            assert wait_for(lambda: engine.log().count(outcome) > before), engine.log()

        path.write_text("alice alice-key-1\ncarol carol-key-3\n")
        hang_up("SIGHUP: 2 API keys read from")
        assert [post(engine, key) for key in ("bob-key-2", "carol-key-3", "alice-key-1")] == [401, 200, 200]
        path.write_text("alice alice-key-1\ncarol\n")
        hang_up("SIGHUP: API keys not reloaded, those until now still hold")
        assert "line 2: expected NAME KEY, got 1 field" in engine.log()
        assert [post(engine, key) for key in ("bob-key-2", "carol-key-3")] == [401, 200]
    finally:
        assert engine.stop() == 0
