"""`argus bench checkpoint` times the checkpoints of the cache it saved for its engine, or fails saying the engine did
not restore it. From 8ddb067 a sim engine left out every SD-XL latent at the restore (its workers take 4x2x2
placeholders), and the bench went on: it printed "1638 prompts, 1024 MiB of SD-XL latents" and checkpoints of 0.01 to
0.3 s, of a cache that held only its probes' latents, where 1 GiB took 2 to 4 s. It now runs its sim worker with
`--sim-latents sdxl`, a model whose engine restores them."""

import argparse
import json

import pytest

from loadgen.bench import checkpoint_bench


@pytest.mark.timeout(90)
def test_the_engine_restores_every_prompt_saved_for_it_and_the_run_reports_them(capsys, tmp_path):
    report = tmp_path / "checkpoint.json"
    args = argparse.Namespace(cache_mib=8, interval=1.0, duration=2.0, rate=5.0, json=str(report))
    assert checkpoint_bench.run(args) == 0
    out = capsys.readouterr().out
    # what it does while the cache is built and restored, which took minutes at a large --cache-mib without a word
    assert "building a cache of 8 MiB: 12 prompts x 5 SD-XL latents ..." in out
    assert "starting an engine (sim backend) to restore it ..." in out
    assert "restored 12 prompts; a new prompt 5 times a second for 2 s ..." in out
    assert "12 prompts, 8 MiB of SD-XL latents" in out
    figures = json.loads(report.read_text())
    assert (figures["prompts"], figures["restored_prompts"], figures["sim_latents"]) == (12, 12, "sdxl")
    # every probe was answered with images (the run fails otherwise), and each counted in one group
    assert figures["during"]["count"] + figures["outside"]["count"] == 10


def test_a_cache_restored_whole_passes_and_one_restored_in_part_fails_naming_both_counts_and_why():
    log = (
        "2026-12-05 20:31:18,646 INFO argus.cache[1]: prompt cache restored from /tmp/c/x.argus: 1638 prompts\n"
        "2026-12-05 20:31:18,646 INFO argus.cache[1]: serving from the restored prompt cache\n"
    )
    assert checkpoint_bench._check_restored(log, 1638) == 1638
    with pytest.raises(RuntimeError, match="restored 1,638 of the 1,639 prompts"):
        checkpoint_bench._check_restored(log, 1639)
    left_out = (
        "2026-12-05 20:31:18,600 WARNING argus.cache[1]: 60 saved latents no run can start from, left out ((1, 5) the"
        " first: of shape (4, 128, 128), not the (4, 2, 2) the model takes at 1024x1024)\n"
        "2026-12-05 20:31:18,646 INFO argus.cache[1]: prompt cache restored from /tmp/c/x.argus: 0 prompts\n"
    )
    with pytest.raises(RuntimeError, match=r"restored 0 of the 12 prompts saved") as refused:
        checkpoint_bench._check_restored(left_out, 12)
    assert "no run can start from" in str(refused.value)  # the engine's warning, which says why
