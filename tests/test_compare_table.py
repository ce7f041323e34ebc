"""`argus bench compare`'s table and JSON show the requests that got no image, and why; a figure with nothing to take
it over is n/a. A run whose every request was refused showed a row of None."""

import json

from compare_runs import compare_argv, run_summary

from engine.cli import build_parser
from loadgen.bench import compare_bench


def test_requests_without_an_image_are_counted_and_their_codes_said(tmp_path, monkeypatch, capsys):
    async def one_policy(policy, args, schedule, prompts, width, height, log_dir):
        return [], run_summary(len(schedule), "invalid_size" if policy == "clipper-ht" else None)

    monkeypatch.setattr(compare_bench, "_one_policy", one_policy)
    args = build_parser().parse_args([*compare_argv(tmp_path), "--json", str(tmp_path / "compare.json")])
    assert compare_bench.run(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("policy "))
    header, _, argus_row, refused_row = lines[at : at + 4]
    assert header.split()[1:3] == ["requests", "no_image"]
    requests = int(argus_row.split()[1])
    assert argus_row.split()[1:3] == [str(requests), "0"]
    assert refused_row.split()[1:3] == [str(requests), str(requests)]
    assert "None" not in out and "n/a" in refused_row
    assert f"clipper-ht: {requests} requests without an image: invalid_size {requests}" in out
    results = json.loads((tmp_path / "compare.json").read_text())["policies"]
    assert results["clipper-ht"]["no_image"] == requests and results["argus"]["no_image"] == 0
    assert results["clipper-ht"]["error_codes"] == {"invalid_size": requests}
