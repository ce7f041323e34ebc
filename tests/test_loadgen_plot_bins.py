"""The timeline's bins are bounded over the whole span it draws, worker samples in the drain included, not only
over the schedule that --bin-s is checked against before the run."""

import http.server
import json

import pytest
from pictures import opens_as_png
from stand_in_http import serving

from loadgen import cli
from loadgen.plot import MAX_BINS, bin_timeline, timeline_plot
from loadgen.records import Answer, make_record


def _sent_over_10_s():
    return [make_record(i, 0, i * 0.1, i * 0.1, 5.0, Answer("busy", code="busy", status=429), None) for i in range(100)]


def test_samples_past_the_sends_widen_bins_that_would_be_too_many_to_a_round_width():
    """10 s of sends at --bin-s 0.001 passed the check (10,000 bins), then the samples up to a 60 s drain made it
    60,000 bins, 2.7 s to draw."""
    bins = bin_timeline(_sent_over_10_s(), span_s=60.0, bin_s=0.001)
    assert bins.width_s == 0.01 and len(bins.edges) - 1 == 6_000 <= MAX_BINS
    assert bins.offered_rps.sum() * bins.width_s == 100  # every request still in a bin
    assert bin_timeline(_sent_over_10_s(), bin_s=0.001).width_s == 0.001  # 9,900 bins, within the bound


def test_the_plot_says_the_width_it_drew(tmp_path):
    records = _sent_over_10_s()
    samples = [(0.0, {0: 1}), (60.0, {0: 1})]
    assert timeline_plot(records, tmp_path / "t.png", worker_levels=samples, bin_s=0.001) == 0.01
    assert timeline_plot(records, tmp_path / "t.png", worker_levels=samples, bin_s=0.5) == 0.5


class _StatusOnly(http.server.BaseHTTPRequestHandler):
    """An engine's /ready and /plan, one worker at level 0; the requests go over ZeroMQ to nothing."""

    def do_GET(self):
        body = {"/ready": b"{}", "/plan": json.dumps({"workers_per_level": {"0": 1}}).encode()}.get(self.path)
        if body is None:
            return self.send_error(404)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def status_url():
    with serving(_StatusOnly) as url:
        yield url


@pytest.mark.timeout(60)
def test_a_bin_width_the_drain_makes_too_fine_is_widened_and_said(tmp_path, capsys, status_url):
    """Two requests sent within a few ms, never answered (nothing listens on the ZeroMQ address): the run, and the
    worker samples, last the 3 s drain, which --bin-s 0.0001 would have cut into 30,000 bins."""
    plot = tmp_path / "t.png"
    argv = ["--zmq", "tcp://127.0.0.1:9", "--url", status_url, "--rate", "100", "--max-requests", "2"]
    argv += ["--drain-s", "3", "--sample-every-s", "0.1", "--plot", str(plot), "--bin-s", "0.0001", "--no-progress"]
    assert cli.main(argv) == 0
    said = capsys.readouterr().err
    assert "argus loadgen: note: the plot's bins are 0.0005 s wide, not --bin-s 0.0001" in said, said
    assert opens_as_png(plot, wider_than=100)
