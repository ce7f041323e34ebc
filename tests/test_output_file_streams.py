"""A command's output given a stream (`--json /dev/stdout`, a FIFO, /dev/null) is checked as what is written: the
stream itself, not the directory it is listed in."""

import os

import pytest
from test_cli_arguments import OUTPUT_FILES

from engine.cli import build_parser


def directories_read_only(monkeypatch):
    """As for a user other than root: /dev, /dev/pts and /proc/PID/fd, where /dev/stdout leads, take no new file."""
    access = os.access

    def user_access(path, mode, **kwargs):
        if mode & os.W_OK and os.path.isdir(path):
            return False
        return access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", user_access)


@pytest.mark.parametrize("argv", OUTPUT_FILES, ids=" ".join)
def test_a_stream_is_taken_as_an_output_where_its_directory_takes_no_file(argv, tmp_path, monkeypatch, capsys):
    """`argus loadgen --json /dev/stdout | jq` by a user other than root: refused before the run, `argument --json:
    cannot write in /proc/4242/fd` (its pipe's; `/dev/pts` at a terminal), where the docs say the standard output may
    take it. Nothing is made beside a stream: it is written as it comes."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    directories_read_only(monkeypatch)
    for stream in (str(fifo), os.devnull):
        assert stream in vars(build_parser().parse_args([*argv, stream])).values()
    # a file is still made in its directory (through a hidden one beside it): one this user cannot write is refused
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, str(tmp_path / "out.json")])
    assert "cannot write in" in capsys.readouterr().err


@pytest.mark.parametrize("argv", OUTPUT_FILES, ids=" ".join)
def test_a_dash_is_the_standard_output(argv):
    """As it is to --records and to most commands: `argus bench cache --json -` wrote a file named '-' in the working
    directory, where `--records -` printed."""
    assert "/dev/stdout" in vars(build_parser().parse_args([*argv, "-"])).values()
