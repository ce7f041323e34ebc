"""`nohup argus loadgen ... &`: a run started ignoring SIGHUP outlives the terminal it was started in. Its own SIGHUP
handler replaced nohup's SIG_IGN, and closing the terminal cut the run short (`cut short: 74 planned`)."""

import http.server
import json
import signal
import subprocess
import sys

from stand_in_http import serving

from engine_process import ROOT

# python with SIGHUP ignored, as nohup starts it, running argus's command line
NOHUP = "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); os.execv(sys.executable, sys.argv[1:])"


class _Ready(http.server.BaseHTTPRequestHandler):
    """An engine's GET /ready (ready); every request a 501 at once, so the run ends with its schedule."""

    def do_GET(self):
        body = b"{}" if self.path == "/ready" else b""
        self.send_response(200 if body else 501)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_run_started_ignoring_sighup_goes_on_through_a_hangup(tmp_path):
    summary = tmp_path / "summary.json"
    with serving(_Ready) as url:
        command = [sys.executable, "-c", NOHUP, sys.executable, "-m", "engine.cli", "loadgen", "--url", url]
        command += ["--rate", "100", "--duration-s", "3", "--json", str(summary), "--no-progress"]
        run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for line in run.stderr:
                if line.startswith("sending"):
                    break
            run.send_signal(signal.SIGHUP)  # the terminal closed
            said = run.stderr.read()
            assert run.wait(timeout=60) == 0, said
        finally:
            run.kill()
    written = json.loads(summary.read_text())
    assert written["planned"] == written["sent"] > 100 and written["stopped_s"] is None, said
