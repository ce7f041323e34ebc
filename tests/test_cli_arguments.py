"""The command line refuses numbers its components cannot run with, naming the option, before starting anything."""

import pytest

from engine.cli import build_parser


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["serve", "--window-s", "0"], "--window-s"),
        (["serve", "--slo-ms", "-5"], "--slo-ms"),
        (["serve", "--slo-ms", "nan"], "--slo-ms"),
        (["serve", "--max-queue", "0"], "--max-queue"),
        (["serve", "--workers", "-1"], "--workers"),
        (["serve", "--cache-bytes", "-1"], "--cache-bytes"),
        (["serve", "--heartbeat-timeout", "inf"], "--heartbeat-timeout"),
        (["serve", "--time-scale", "-0.5"], "--time-scale"),
        (["worker", "--connect", "tcp://127.0.0.1:5556", "--count", "0"], "--count"),
        (["worker", "--connect", "tcp://127.0.0.1:5556", "--threads", "two"], "--threads"),
    ],
)
def test_a_number_out_of_range_is_a_usage_error(argv, option, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert f"argument {option}: expected a number" in capsys.readouterr().err


def test_zero_where_zero_means_something_is_accepted():
    args = build_parser().parse_args(["serve", "--workers", "0", "--time-scale", "0", "--shutdown-timeout", "0"])
    assert (args.workers, args.time_scale, args.shutdown_timeout) == (0, 0.0, 0.0)
