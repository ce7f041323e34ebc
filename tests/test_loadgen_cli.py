"""`argus loadgen`'s command line: what it refuses up front, and the schedule its flags make."""

import argparse
import http.server
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from stand_in_http import serving
from waiting import wait_for

from engine.cli import main as argus_main
from engine_process import ROOT
from loadgen import arrivals, cli
from loadgen.arrivals import mean_rate

NO_ENGINE = "http://127.0.0.1:9"  # nothing listens: every case here must stop before reaching it


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--url", NO_ENGINE, *argv])
    cli._check(args)
    return args


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # squared, each leaves the floats: it was a ZeroDivisionError traceback
        (["--rate", "1", "--arrivals", "gamma", "--cv", "1e-200", "--duration-s", "1"], "for cv 1e-200 at rate 1/s"),
        (["--rate", "1", "--arrivals", "gamma", "--cv", "1e200", "--duration-s", "1"], "for cv 1e+200 at rate 1/s"),
        # all 5 drawn at one instant, and sent at once: no rate offered
        (["--rate", "1", "--arrivals", "gamma", "--cv", "1e6", "--max-requests", "5"], "cv 1e+06 rounds more than"),
        # it ran a Poisson schedule (gap CV 0.97 for --cv 4) without a word
        (["--rate", "1", "--cv", "4", "--duration-s", "1"], "--cv is for --arrivals gamma, not poisson"),
        (["--trace", "t.csv", "--cv", "4"], "--cv is for --arrivals gamma, not trace"),
        # each was left out without a word: the run sent at a rate its user did not ask for
        (["--rate", "1", "--duration-s", "1", "--rescale", "stretch"], "--rescale is for a --trace rescaled to"),
        (["--trace", "t.csv", "--rescale", "stretch"], "--rescale is for a --trace rescaled to --rate or --load"),
        (["--rate", "1", "--duration-s", "1", "--capacity-rps", "5"], "--capacity-rps is for --load"),
        # taken and never used: only the plot has bins
        (["--rate", "1", "--duration-s", "1", "--bin-s", "5"], "--bin-s cuts the --plot timeline into bins"),
        # the last requests, unanswered at the hard end before their SLO had passed, were counted violations
        (["--rate", "1", "--duration-s", "1", "--slo-ms", "15000", "--drain-s", "3"], "--drain-s 3 is shorter than"),
        (["--rate", "1", "--duration-s", "1", "--size", "65x64"], "--size 65x64: each side must be a multiple of 8"),
        (["--rate", "1", "--duration-s", "1", "--size", "64x100"], "--size 64x100: each side must be a multiple"),
    ],
)
def test_numbers_no_run_can_use_are_refused_before_it_starts(argv, message, capsys):
    assert cli.main(["--url", NO_ENGINE, "--no-progress", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "inf"], "argument --rate: expected a finite number > 0, not 'inf'"),
        (["--rate", "nan"], "argument --rate: expected a finite number > 0, not 'nan'"),
        (["--rate", "0"], "argument --rate: expected a number > 0, not '0'"),
        (["--load", "1", "--capacity-rps", "inf"], "argument --capacity-rps: expected a finite number > 0"),
        (["--rate", "1", "--time-scale", "inf"], "argument --time-scale: expected a finite number > 0"),
        (["--rate", "1", "--arrivals", "gamma", "--cv", "0"], "argument --cv: expected a number > 0, not '0'"),
        (["--rate", "1", "--bin-s", "-1"], "argument --bin-s: expected a number > 0, not '-1'"),
        (["--rate", "1", "--bin-s", "nan"], "argument --bin-s: expected a finite number > 0"),
        (["--rate", "1", "--steps", "0"], "argument --steps: expected a number from 1 to 200 (as the engine takes)"),
        (["--rate", "1", "--steps", "201"], "argument --steps: expected a number from 1 to 200 (as the engine"),
        (["--rate", "1", "--drain-s", "inf"], "argument --drain-s: expected a finite number > 0"),
        (["--rate", "1", "--max-requests", "0"], "argument --max-requests: expected a number > 0, not '0'"),
        (["--rate", "1", "--slo-ms", "-5"], "argument --slo-ms: expected a number > 0, not '-5'"),
    ],
)
def test_numbers_out_of_bounds_are_refused_by_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--url", NO_ENGINE, "--no-progress", "--duration-s", "1", *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # a trace of 10 s is its own busiest minute: --load sets its mean, a quarter of its own rate here
        (
            ["--load", "1.3", "--capacity-rps", "0.196"],
            "--load 1.3 x --capacity-rps 0.196 thins --trace {trace} (10 arrivals at 1/s) to 0.255/s on its own"
            " clock: each arrival is kept with probability 0.25, and --seed 0 kept none; a trace of 60 s or less is"
            " its own busiest minute, so --load sets its mean rate; ask for a higher rate, or pass --rescale stretch"
            " to keep every arrival",
        ),
        (
            ["--load", "1.3", "--capacity-rps", "1.96", "--time-scale", "0.1"],
            "--load 1.3 x --capacity-rps 1.96 x --time-scale 0.1 thins --trace {trace} (10 arrivals at 1/s) to"
            " 0.255/s on its own clock",
        ),
        (
            ["--rate", "0.1"],
            "--rate 0.1 thins --trace {trace} (10 arrivals at 1/s) to 0.1/s on its own clock: each arrival is kept"
            " with probability 0.1, and --seed 0 kept none; ask for a higher rate",
        ),
        (["--duration-s", "0.5"], "--duration-s 0.5 keeps 0 of the 10 arrivals: the first comes at 1 s"),
        (
            ["--duration-s", "1.5", "--time-scale", "2"],
            "--duration-s 1.5 keeps 0 of the 10 arrivals: the first comes at 2 s of the run (after --time-scale 2)",
        ),
    ],
)
def test_a_schedule_left_empty_says_which_step_emptied_it_in_the_flags_given(argv, message, tmp_path, capsys):
    """Each said 'the schedule is empty (check --duration-s and --time-scale)', whichever flags were given."""
    trace = tmp_path / "offsets.txt"
    trace.write_text("".join(f"{1000 + i * 1000}\n" for i in range(10)))
    assert cli.main(["--url", NO_ENGINE, "--no-progress", "--trace", str(trace), *argv]) == 2
    assert capsys.readouterr().err.startswith(f"argus loadgen: error: {message.format(trace=trace)}")


def test_a_poisson_run_that_draws_no_arrival_says_so(capsys):
    assert cli.main(["--url", NO_ENGINE, "--no-progress", "--rate", "0.01", "--duration-s", "1"]) == 2
    assert (
        capsys.readouterr().err
        == "argus loadgen: error: --rate 0.01 drew no arrival in --duration-s 1: ask for more of either\n"
    )


def test_a_size_that_is_no_size_is_refused_naming_the_flag(capsys):
    """It said 'size "64" must be...', as the HTTP API answers a request, naming no flag."""
    assert cli.main(["--url", NO_ENGINE, "--no-progress", "--rate", "1", "--max-requests", "1", "--size", "64"]) == 2
    assert (
        capsys.readouterr().err == "argus loadgen: error: --size must be auto or WIDTHxHEIGHT (1024x1024), not '64'\n"
    )


@pytest.mark.parametrize("output", ["--records", "--json", "--plot"])
def test_an_output_that_is_an_input_is_refused_and_the_input_left_whole(output, tmp_path, capsys):
    """Written as the run ended, it replaced the trace (or the prompts) it was made from."""
    trace = tmp_path / "trace.txt"
    trace.write_text("0\n500\n")
    assert cli.main(["--url", NO_ENGINE, "--no-progress", "--trace", str(trace), output, str(trace)]) == 2
    assert f"{output} {trace} is the input {trace}" in capsys.readouterr().err
    assert trace.read_text() == "0\n500\n"


@pytest.mark.parametrize(
    ("first", "second", "via_link"),
    [("--records", "--json", False), ("--json", "--plot", False), ("--records", "--plot", True)],
)
def test_two_outputs_of_one_file_are_refused_before_the_run(first, second, via_link, tmp_path, capsys):
    """Each was written whole as the run ended, the last in place of the others: `--records out --json out` left the
    summary alone, the records gone, and exited 0."""
    out = tmp_path / "out"
    other = tmp_path / "link" if via_link else out
    if via_link:
        other.symlink_to(out)
    argv = ["--url", NO_ENGINE, "--no-progress", "--rate", "1", "--max-requests", "1"]
    assert cli.main([*argv, first, str(out), second, str(other)]) == 2
    assert capsys.readouterr().err == (
        f"argus loadgen: error: {second} {other} is the file of {first} {out}: one would replace the other\n"
    )


def test_outputs_to_the_standard_output_may_share_it():
    """A stream is written as it comes, nothing replaced: the records and the summary may both go to it."""
    args = parsed("--rate", "1", "--max-requests", "1", "--records", "-", "--json", "/dev/stdout")
    assert args.records == args.json == "/dev/stdout"


def test_a_run_in_a_program_of_ones_own_leaves_its_sigint_handler_as_it_was():
    # the command's (SIG_DFL once the run is over) was left in pytest's process: a later test's Ctrl-C killed it.
    # Python's default_int_handler, or SIG_IGN in a suite started as a background job of a shell without job control
    before = signal.getsignal(signal.SIGINT)
    assert cli.main(["--url", NO_ENGINE, "--no-progress", "--rate", "1", "--size", "65x64"]) == 2
    assert signal.getsignal(signal.SIGINT) is before


def test_under_log_format_json_the_error_loadgen_ends_on_is_a_json_record(caplog, capsys):
    """Printed by loadgen itself, it was the one plain line of `argus --log-format json loadgen`, which a log collector
    could not parse; every other command's is a record (docs/commands.md)."""
    argv = ["--log-format", "json", "loadgen", "--url", NO_ENGINE, "--rate", "1", "--max-requests", "1", "--cv", "4"]
    sigint = signal.getsignal(signal.SIGINT)
    try:
        assert argus_main(argv) == 2
    finally:
        signal.signal(signal.SIGINT, sigint)  # the command's (ending the process) is not pytest's
    assert capsys.readouterr().err == ""  # said as a record alone (in the log's format), not printed beside it
    assert [record.getMessage() for record in caplog.records] == [
        "argus loadgen: error: --cv is for --arrivals gamma, not poisson"
    ]


@pytest.mark.parametrize("url", ["127.0.0.1:9", "tcp://127.0.0.1:9", "http://"])
def test_a_url_that_is_not_an_http_address_is_refused_not_run_as_connection_errors(url, capsys):
    assert cli.main(["--url", url, "--no-progress", "--rate", "1", "--max-requests", "1"]) == 2
    assert f"--url must be an http:// or https:// address, not {url!r}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        # an AttributeError traceback (no --url, none taken for HTTP's default either)
        ["--zmq", "", "--rate", "1", "--max-requests", "1"],
        # sent over HTTP instead, without a word
        ["--url", NO_ENGINE, "--zmq", "", "--rate", "1", "--max-requests", "1"],
        # a Poisson run instead of the trace, without a word
        ["--url", NO_ENGINE, "--trace", "", "--rate", "1", "--max-requests", "1"],
        ["--url", NO_ENGINE, "--prompts", "", "--rate", "1", "--max-requests", "1"],
        # ran without CURVE, the engine's refusal then said as a connection that never came
        ["--zmq", "tcp://127.0.0.1:9", "--curve-secret", "", "--curve-server-key", "engine.key", "--rate", "1"],
    ],
)
def test_a_flag_given_an_empty_value_is_refused_not_read_as_left_out(argv, capsys):
    """`--zmq "$ADDRESS"`, `--trace "$TRACE"` with the variable unset."""
    assert cli.main(["--no-progress", *argv]) == 2
    flag = argv[argv.index("") - 1]
    assert capsys.readouterr().err == (
        f"argus loadgen: error: {flag} is empty (a variable left unset?): give its value, or leave the flag out\n"
    )


def test_a_zmq_address_zeromq_cannot_connect_to_is_one_error_not_one_per_request(capsys):
    assert cli.main(["--zmq", "localhost:5555", "--no-progress", "--rate", "1", "--max-requests", "3"]) == 2
    assert capsys.readouterr().err.startswith(
        "argus loadgen: error: --zmq: 'localhost:5555': expected the engine's ZeroMQ client address, tcp://HOST:PORT"
    )


def test_a_plot_cut_into_more_bins_than_a_figure_can_hold_is_refused_before_the_run(tmp_path, capsys):
    argv = ["--rate", "10", "--duration-s", "100", "--plot", str(tmp_path / "t.png"), "--bin-s", "0.001"]
    assert cli.main(["--url", NO_ENGINE, "--no-progress", *argv]) == 2
    assert "--bin-s 0.001 cuts" in capsys.readouterr().err


def test_a_rate_too_high_to_hold_is_refused_not_drawn(capsys):
    assert cli.main(["--url", NO_ENGINE, "--no-progress", "--rate", "1e12", "--duration-s", "10"]) == 2
    assert "more than a schedule may hold" in capsys.readouterr().err


def test_a_trace_too_long_to_hold_is_refused_unless_cut(tmp_path, monkeypatch, capsys):
    """A rate's schedule past MAX_ARRIVALS was refused, a trace's of as many rows ran: 12 million offsets, held in
    memory with a record each as they ended (0.58 KB), where the docs say no schedule is past it."""
    monkeypatch.setattr(arrivals, "MAX_ARRIVALS", 3)
    trace = tmp_path / "t.txt"
    trace.write_text("0\n1\n2\n3\n")
    assert cli.main(["--url", NO_ENGINE, "--no-progress", "--trace", str(trace)]) == 2
    assert capsys.readouterr().err == (
        f"argus loadgen: error: --trace {trace} makes 4 arrivals, more than a schedule may hold (3): cut it with"
        " --duration-s or --max-requests\n"
    )
    assert len(cli._schedule(parsed("--trace", str(trace), "--max-requests", "3"))) == 3


@pytest.mark.parametrize("time_scale", [1.0, 0.1])
def test_load_is_what_the_engine_sees_whatever_the_time_scale(time_scale):
    """--load 2 x a capacity of 5/s is 10 requests/s at the engine; --time-scale compresses the schedule's
    clock, not the load."""
    args = parsed("--load", "2", "--capacity-rps", "5", "--time-scale", str(time_scale), "--duration-s", "200")
    schedule = cli._schedule(args)
    assert mean_rate(schedule) == pytest.approx(10.0, rel=0.1)


def test_rate_is_on_the_schedules_own_clock_and_compression_speeds_it_up():
    args = parsed("--rate", "2", "--time-scale", "0.1", "--duration-s", "100")
    assert mean_rate(cli._schedule(args)) == pytest.approx(20.0, rel=0.1)


@pytest.mark.parametrize(
    ("name", "content", "flag"),
    [
        ("p.txt", b"a red fox\n\xff\xfe\n", "--prompts"),
        ("p.json", b'["a red fox",', "--prompts"),
        ("p.tsv", b"Prompt\n" + b"a" * 200_000 + b"\n", "--prompts"),
        ("p.json", b"[" * 100_000 + b"]" * 100_000, "--prompts"),
        # each request sent with it was a 400 over HTTP, a traceback and an error over ZeroMQ
        ("p.json", b'["a red fox", "a cat \\ud83d"]', "--prompts"),
        ("t.txt", b"0\n\xff\n", "--trace"),
        # a stray quote makes one field of the rest of the file, over the csv module's limit
        ("t.csv", b'TIMESTAMP,x\n2024-01-01 00:00:01,"1\n' + b"2024-01-01 00:00:02,1\n" * 10_000, "--trace"),
    ],
    ids=[
        "txt not utf-8",
        "json cut short",
        "tsv line too long",
        "json too deep",
        "json half an emoji",
        "trace not utf-8",
        "csv stray quote",
    ],
)
def test_an_input_file_that_cannot_be_read_is_a_one_line_error_naming_it(tmp_path, capsys, name, content, flag):
    path = tmp_path / name
    path.write_bytes(content)
    files = [flag, str(path)] + (["--rate", "1", "--max-requests", "1"] if flag == "--prompts" else [])
    assert cli.main(["--url", NO_ENGINE, "--no-progress", *files]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"argus loadgen: error: {path}") and error.count("\n") == 1


@pytest.mark.parametrize(("name", "flag"), [("p.txt", "--prompts"), ("t.txt", "--trace")])
def test_a_byte_that_is_not_utf8_is_named_by_its_line(tmp_path, capsys, name, flag):
    """Python's message gave its position in the 8 KB chunk being decoded ('position 2431'), nowhere in the file."""
    path = tmp_path / name
    path.write_bytes(b"".join(b"%d\n" % i for i in range(3000)) + b"caf\xe9\n")
    files = [flag, str(path)] + (["--rate", "1", "--max-requests", "1"] if flag == "--prompts" else [])
    assert cli.main(["--url", NO_ENGINE, "--no-progress", *files]) == 2
    assert capsys.readouterr().err == (
        f"argus loadgen: error: {path}:3001: not UTF-8: can't decode byte 0xe9 (invalid continuation byte)\n"
    )


def test_a_trace_naming_a_prompt_the_prompt_file_lacks_is_refused_before_the_run_naming_both(tmp_path, capsys):
    """It was refused once the run was announced ('sending 1 requests'), naming neither file."""
    trace, prompts = tmp_path / "t.txt", tmp_path / "p.txt"
    trace.write_text("0,2\n")
    prompts.write_text("a red fox\na blue fox\n")
    assert cli.main(["--url", NO_ENGINE, "--no-progress", "--trace", str(trace), "--prompts", str(prompts)]) == 2
    assert capsys.readouterr().err == (
        f"argus loadgen: error: --trace {trace}: arrival 0 names prompt 2, but there are 2 prompts "
        f"in --prompts {prompts}\n"
    )


def test_a_run_with_no_engine_to_answer_is_refused_before_it_starts(capsys):
    """It ran its whole schedule, each request a connection_error, and reported 100% violations, exit 0."""
    assert cli.main(["--url", NO_ENGINE, "--no-progress", "--rate", "1", "--max-requests", "3"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"argus loadgen: error: no engine answers at {NO_ENGINE}: ") and error.count("\n") == 1


@pytest.mark.parametrize(
    ("given", "named"),
    [(["--api-key", "s3cret\n"], "--api-key"), ([], "$ARGUS_API_KEY")],
    ids=["flag", "variable"],
)
def test_an_api_key_no_http_client_can_send_is_refused_naming_where_it_came_from(
    given, named, capsys, monkeypatch, http_that_answers_nothing_useful
):
    """A key read from a file with its newline (a Kubernetes Secret made --from-file): the check of /ready took
    aiohttp's refusal to send the header for a JSON body that did not parse, the run went on, each request an ERROR
    traceback, exit 0. The engine refuses such a key at start in the same words."""
    monkeypatch.setenv("ARGUS_API_KEY", "s3cret\n")
    argv = ["--url", http_that_answers_nothing_useful, *given, "--no-progress", "--rate", "50", "--max-requests", "3"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        f"argus loadgen: error: {named} starts or ends with a space or holds a control character (a newline read from"
        " a file?): no HTTP client can send it\n"
    )


class _ReadyAndNothingElse(http.server.BaseHTTPRequestHandler):
    """An engine's GET /ready (ready), and 501 to every other request."""

    def do_GET(self):
        if self.path != "/ready":
            return self.send_error(501)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("load", [[], ["--load", "1"]], ids=["rate", "load"])
def test_a_url_with_no_engine_behind_it_is_refused_before_the_run(capsys, http_that_answers_nothing_useful, load):
    """`--url http://HOST:8000/v1`, the base URL OpenAI's clients take: /ready was a 404, taken as an engine that
    answers, and the whole schedule ran, every request a 404 not_found, reported as 100% violations, exit 0 (with
    --load, it said to pass --capacity-rps, which then ran so)."""
    url = http_that_answers_nothing_useful + "/v1"
    rate = load or ["--rate", "50"]
    assert cli.main(["--url", url, "--no-progress", *rate, "--max-requests", "3"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"argus loadgen: error: no engine at {url}: GET {url}/ready answered 501")
    assert error.count("\n") == 1 and "without the /v1" in error and "--capacity-rps" not in error


@pytest.fixture(scope="module")
def http_that_answers_nothing_useful():
    """Something that answers as an engine's /ready does, so a run starts; no request gets an image. One for the
    module: it keeps no state between requests, so no test sees another's."""
    with serving(_ReadyAndNothingElse) as url:
        yield url


def test_ctrl_c_ends_a_run_with_the_results_of_what_was_sent(tmp_path, http_that_answers_nothing_useful):
    """Before, Ctrl-C printed a traceback and wrote nothing: a long run stopped early was lost."""
    run, records, summary = _start_long_run(tmp_path, http_that_answers_nothing_useful)
    said = _signal_once_sending(run, signal.SIGINT)
    assert "Traceback" not in said and "interrupted: sending no more" in said
    written = json.loads(summary.read_text())
    # a Poisson draw of about 1,200 requests; what was sent before the Ctrl-C, each recorded once
    assert written["planned"] > 1000 > written["sent"] == len(records.read_text().splitlines())


def test_ctrl_c_held_down_still_gets_the_results_written_and_printed(tmp_path, http_that_answers_nothing_useful):
    """Ctrl-C held down: the first stops the sending, the second the waiting, and a third, landing once the run was
    over (the loop's teardown, the plot's import), was a KeyboardInterrupt traceback, exit 130: no plot written, no
    summary printed."""
    plot = tmp_path / "timeline.png"
    run, _, summary = _start_long_run(tmp_path, http_that_answers_nothing_useful, "--plot", str(plot))
    done = threading.Event()

    def hold_ctrl_c_down():
        while not done.wait(0.05):
            run.send_signal(signal.SIGINT)

    try:
        for line in run.stderr:
            if line.startswith("sending"):
                break
        holding = threading.Thread(target=hold_ctrl_c_down, daemon=True)
        holding.start()
        printed = run.stdout.readline()  # the summary's first line
        done.set()
        holding.join()
        out, said = run.stdout.read(), run.stderr.read()  # not communicate(): it skips what readline buffered
        run.wait(timeout=60)
    finally:
        done.set()
        run.kill()
    assert "Traceback" not in said and printed.startswith("sent ") and "cut short" in printed, said
    assert "max send lag" in out  # the whole summary
    # a Ctrl-C that came after the last line was printed may still end the process, all written
    assert run.returncode in (0, -signal.SIGINT), said
    assert json.loads(summary.read_text())["planned"] > 1000 and plot.stat().st_size > 0


def _start_long_run(tmp_path, url: str, *more: str, records: Path | None = None) -> tuple[subprocess.Popen, Path, Path]:
    records, summary = records or tmp_path / "records.jsonl", tmp_path / "summary.json"
    # a Poisson draw of about 1,200 requests, 12 s of them: far from over by the time a test stops it
    command = [sys.executable, "-m", "engine.cli", "loadgen", "--url", url, "--rate", "100", "--duration-s", "12"]
    command += ["--records", str(records), "--json", str(summary), "--no-progress", *more]
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return run, records, summary


def _signal_once_sending(run: subprocess.Popen, signum: int) -> str:
    """Sends `signum` once the schedule is drawn and the run is on; what the run said, once it ended with 0."""
    try:
        for line in run.stderr:
            if line.startswith("sending"):
                break
        run.send_signal(signum)
        said = run.stderr.read()
        assert run.wait(timeout=30) == 0, said
    finally:
        run.kill()
    return said


def test_a_summary_nobody_reads_costs_no_file(tmp_path, http_that_answers_nothing_useful):
    """`argus loadgen ... | head -1`: the summary's print met a closed pipe before the files were written, and
    ended the command with a BrokenPipeError traceback, writing none."""
    records, summary = tmp_path / "records.jsonl", tmp_path / "summary.json"
    command = [sys.executable, "-m", "engine.cli", "loadgen", "--url", http_that_answers_nothing_useful]
    command += ["--rate", "20", "--max-requests", "3", "--records", str(records), "--json", str(summary)]
    run = subprocess.Popen(command + ["--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run.stdout.close()  # the reader is gone before the summary comes
    try:
        said = run.stderr.read().decode()
        assert run.wait(timeout=60) == 0, said
    finally:
        run.kill()
    assert "Traceback" not in said and "Exception" not in said
    assert len(records.read_text().splitlines()) == json.loads(summary.read_text())["sent"] == 3


def test_a_run_killed_keeps_the_records_of_the_requests_that_ended(tmp_path, http_that_answers_nothing_useful):
    """Records were written only at the end: an hour's replay killed (out of memory, kill -9) left no file."""
    run, records, _ = _start_long_run(tmp_path, http_that_answers_nothing_useful)
    try:
        assert wait_for(lambda: records.exists() and len(records.read_text().splitlines()) >= 20)
        run.kill()
        run.wait(timeout=30)
    finally:
        run.kill()
    lines = records.read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]  # each line whole: none cut off by the kill
    assert len(set(ids)) == len(ids) >= 20


def test_a_closed_terminal_ends_a_run_as_sigterm_does(tmp_path, http_that_answers_nothing_useful):
    """SIGHUP (the terminal or ssh session the run was started in went away) ended it unreported."""
    run, records, summary = _start_long_run(tmp_path, http_that_answers_nothing_useful)
    _signal_once_sending(run, signal.SIGHUP)
    written = json.loads(summary.read_text())
    assert written["planned"] > written["sent"] == len(records.read_text().splitlines())


def test_a_run_stopped_writes_every_record_still_on_its_way_to_a_pipe(tmp_path, http_that_answers_nothing_useful):
    """The records go to the file from a thread of their own: a run stopped (SIGTERM) waits for those it has not
    written yet, and a pipe, not rewritten at the end, has every one."""
    out = tmp_path / "out"
    out.symlink_to("/proc/self/fd/1")
    run, _, summary = _start_long_run(tmp_path, http_that_answers_nothing_useful, records=out)
    try:
        lines = [run.stdout.readline() for _ in range(20)]  # the first 20 to end, each written as it did
        run.send_signal(signal.SIGTERM)
        lines += run.stdout.read().splitlines()
        said = run.stderr.read()
        assert run.wait(timeout=30) == 0, said
    finally:
        run.kill()
    ids = [json.loads(line)["id"] for line in lines if line.startswith("{")]
    assert sorted(ids) == list(range(json.loads(summary.read_text())["sent"])) and len(ids) >= 20


def test_records_to_a_pipe_whose_reader_went_away_are_said_lost(tmp_path, http_that_answers_nothing_useful):
    """`--records /dev/stdout | head -1`: the warning said the records would be written again at the end, which a
    pipe never is, and the command ended 0, as if they all had been."""
    out = tmp_path / "out"
    out.symlink_to("/proc/self/fd/1")
    command = [sys.executable, "-m", "engine.cli", "loadgen", "--url", http_that_answers_nothing_useful]
    # a second of requests: far from over when the reader goes after the first record, so later ones meet the pipe
    command += ["--rate", "200", "--max-requests", "200", "--records", str(out), "--no-progress"]
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = run.stdout.readline()
        run.stdout.close()  # as head -1 does
        said = run.stderr.read()
        run.wait(timeout=60)
    finally:
        run.kill()
    assert json.loads(first)["id"] >= 0 and run.returncode == 1, said
    assert "Traceback" not in said and "written again" not in said
    assert f"records are no longer written to {out} as requests end (Broken pipe): what it missed is lost" in said
    assert said.endswith(f"argus loadgen: error writing {out}: Broken pipe\n")


def test_records_to_stdout_sent_to_a_file_keep_the_summary_after_them(tmp_path, http_that_answers_nothing_useful):
    """`--records - > out.jsonl`: the records were written again at the end into a new out.jsonl, and the summary
    printed after them went to the file it replaced."""
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "engine.cli", "loadgen", "--url", http_that_answers_nothing_useful]
    command += ["--rate", "200", "--max-requests", "20", "--records", "-", "--no-progress"]
    with open(out, "w") as stdout:
        run = subprocess.run(command, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = out.read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines[:20]) == list(range(20))
    assert lines[20].startswith("sent "), lines[20:]


def test_records_to_stderr_sent_to_a_file_keep_the_lines_said_before_them(tmp_path, http_that_answers_nothing_useful):
    """`--records /dev/stderr 2> run.log`, as for stdout: replaced at the end, the file lost what the run said on
    stderr before its records (and would lose what it said after)."""
    out = tmp_path / "run.log"
    command = [sys.executable, "-m", "engine.cli", "loadgen", "--url", http_that_answers_nothing_useful]
    command += ["--rate", "200", "--max-requests", "20", "--records", "/dev/stderr", "--no-progress"]
    with open(out, "w") as stderr:
        run = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=60)
    lines = out.read_text().splitlines()
    assert run.returncode == 0, lines
    assert lines[0].startswith("sending "), lines
    assert sorted(json.loads(line)["id"] for line in lines[1:] if line.startswith("{")) == list(range(20))


def test_records_dash_are_the_standard_output():
    """`--records -` wrote a file named '-' in the current directory."""
    assert parsed("--rate", "1", "--max-requests", "1", "--records", "-").records == "/dev/stdout"


def test_a_summary_the_standard_output_cannot_take_is_said_not_a_traceback(tmp_path, http_that_answers_nothing_useful):
    """`argus loadgen ... > summary.txt` on a full disk: the summary's print ended the command in an OSError traceback
    (a closed pipe alone was handled)."""
    summary = tmp_path / "summary.json"
    command = [sys.executable, "-m", "engine.cli", "loadgen", "--url", http_that_answers_nothing_useful]
    command += ["--rate", "20", "--max-requests", "3", "--json", str(summary), "--no-progress"]
    with open("/dev/full", "w") as full:
        run = subprocess.run(command, cwd=ROOT, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    said = "argus loadgen: error writing the summary to the standard output: No space left on device\n"
    assert run.stderr.endswith(said) and json.loads(summary.read_text())["sent"] == 3


def _files_up_to(size: int) -> None:
    """In the child: a file written past `size` bytes fails as on a full disk (EFBIG, the signal ignored)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def test_records_that_fill_the_disk_cost_neither_the_run_nor_the_summary(tmp_path, http_that_answers_nothing_useful):
    """A records file that could not be written to mid-run (a full disk) printed a traceback for every request
    that ended, then ended the run with exit 2: no summary printed, no --json written."""
    records, summary = tmp_path / "records.jsonl", tmp_path / "summary.json"
    command = [sys.executable, "-m", "engine.cli", "loadgen", "--url", http_that_answers_nothing_useful]
    command += ["--rate", "50", "--max-requests", "30", "--records", str(records), "--json", str(summary)]
    run = subprocess.run(
        command + ["--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: _files_up_to(4000),
    )
    assert run.returncode == 1, run.stderr  # the results could not all be written
    assert "Traceback" not in run.stderr and run.stderr.count("records are no longer written") == 1
    assert f"argus loadgen: error writing {records}: File too large" in run.stderr
    assert json.loads(summary.read_text())["sent"] == 30 and run.stdout.startswith("sent ")
    assert not list(tmp_path.glob(".*.partial"))  # the end's attempt left nothing beside


def test_output_files_made_private_stay_private_when_written_again(tmp_path, http_that_answers_nothing_useful):
    """The records (users' prompts) and summary are written beside their place and moved into it: the file put in
    place of one made 0600 was 0644, readable by every user of the machine."""
    records, summary = tmp_path / "records.jsonl", tmp_path / "summary.json"
    for private in (records, summary):
        private.write_text("")
        private.chmod(0o600)
    command = [sys.executable, "-m", "engine.cli", "loadgen", "--url", http_that_answers_nothing_useful]
    command += ["--rate", "50", "--max-requests", "3", "--records", str(records), "--json", str(summary)]
    run = subprocess.run(command + ["--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert json.loads(summary.read_text())["sent"] == 3, run.stderr
    assert len(records.read_text().splitlines()) == 3
    assert [stat.S_IMODE(path.stat().st_mode) for path in (records, summary)] == [0o600, 0o600]


def test_a_plot_that_fills_the_disk_leaves_the_last_plot_whole(tmp_path, http_that_answers_nothing_useful):
    """The plot was saved in place: a full disk left the first part of a PNG where the last plot was (which an image
    viewer took for a PNG, of a cut figure), as --records and --json never did."""
    plot, summary = tmp_path / "timeline.png", tmp_path / "summary.json"
    plot.write_bytes(b"the last run's plot")
    command = [sys.executable, "-m", "engine.cli", "loadgen", "--url", http_that_answers_nothing_useful]
    command += ["--rate", "50", "--max-requests", "5", "--plot", str(plot), "--json", str(summary), "--no-progress"]
    run = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=60, preexec_fn=lambda: _files_up_to(8000)
    )
    assert run.returncode == 1, run.stderr
    assert f"argus loadgen: error writing {plot}: File too large" in run.stderr and "Traceback" not in run.stderr
    assert plot.read_bytes() == b"the last run's plot" and json.loads(summary.read_text())["sent"] == 5
    assert not list(tmp_path.glob(".*.partial"))


@pytest.mark.parametrize(
    ("rows", "problem"),
    [(["2024-01-01 00:00:01"], "at least two arrivals"), (["2024-01-01 00:00:01"] * 2, "at the same instant")],
)
def test_a_trace_with_no_mean_rate_to_rescale_says_which_flag_and_file(tmp_path, capsys, rows, problem):
    """It said only 'a mean rate needs at least two arrivals'."""
    trace = tmp_path / "t.csv"
    trace.write_text("\n".join(["TIMESTAMP", *rows]) + "\n")
    assert cli.main(["--url", NO_ENGINE, "--no-progress", "--trace", str(trace), "--rate", "2"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"argus loadgen: error: --rate cannot rescale --trace {trace}: ") and problem in error


def test_records_to_stdout_are_each_written_once_and_a_link_stays_a_link(tmp_path, http_that_answers_nothing_useful):
    """`--records /dev/stdout` (a link to /proc/self/fd/1, as `out` is here): the records went to it as requests
    ended, then the end's rewrite in request order put a regular file in the link's place (as root, /dev/stdout
    itself) and the reader never had them in order."""
    out = tmp_path / "out"
    out.symlink_to("/proc/self/fd/1")
    command = [sys.executable, "-m", "engine.cli", "loadgen", "--url", http_that_answers_nothing_useful]
    command += ["--rate", "50", "--max-requests", "5", "--records", str(out), "--no-progress"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    ids = sorted(json.loads(line)["id"] for line in run.stdout.splitlines() if line.startswith("{"))
    assert ids == [0, 1, 2, 3, 4] and out.is_symlink()


def test_records_written_through_a_link_to_a_file(tmp_path, http_that_answers_nothing_useful):
    """The link was replaced by a file in request order; the file it named kept the records in the order they
    ended."""
    target, link = tmp_path / "runs" / "records.jsonl", tmp_path / "records.jsonl"
    target.parent.mkdir()
    link.symlink_to(target)
    command = [sys.executable, "-m", "engine.cli", "loadgen", "--url", http_that_answers_nothing_useful]
    command += ["--rate", "50", "--max-requests", "5", "--records", str(link), "--no-progress"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert link.is_symlink() and [json.loads(line)["id"] for line in target.read_text().splitlines()] == [0, 1, 2, 3, 4]


def test_ctrl_c_while_the_trace_is_read_ends_the_command_then(tmp_path, capsys):
    """A Ctrl-C while the schedule was made (30 s for a trace of 3 million rows, as long to draw 9 million Poisson
    arrivals) was asyncio's runner's to take: a cancellation, which waited for the next await, after the reading. Here
    the trace is a pipe its writer keeps open: the command ended only once the pipe was closed."""
    prompts, trace = tmp_path / "p.txt", tmp_path / "trace"
    prompts.write_text("a red fox\n")
    os.mkfifo(trace)
    ended, closed_for_it = threading.Event(), threading.Event()

    def ctrl_c_as_it_reads():
        with trace.open("w") as f:  # opened once the command opens it to read
            f.write("0\n")
            f.flush()
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            if not ended.wait(30):  # a hang's bound: ended, it would have taken the trace as it is and stopped
                closed_for_it.set()
                f.write("1000\n")

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a suite run in the background ignores it
    writer = threading.Thread(target=ctrl_c_as_it_reads, daemon=True)
    writer.start()
    try:
        code = cli.main(["--url", NO_ENGINE, "--no-progress", "--trace", str(trace), "--prompts", str(prompts)])
    finally:
        ended.set()
        writer.join(timeout=10)
        signal.signal(signal.SIGINT, before)
    assert (code, capsys.readouterr().err) == (130, "argus loadgen: interrupted\n")
    assert not closed_for_it.is_set()
