"""`argus bench checkpoint` times the checkpoints of the cache it saved for its engine, or fails saying the engine did
not restore it. From 8ddb067 a sim engine left out every SD-XL latent at the restore (no sim worker returns that
shape), and the bench went on: it printed "1638 prompts, 1024 MiB of SD-XL latents" and checkpoints of 0.01 to 0.3 s,
of a cache that held only its probes' latents, where 1 GiB took 2 to 4 s."""

import argparse

import pytest

from loadgen.bench import checkpoint_bench


@pytest.mark.timeout(90)
def test_a_cache_the_engine_did_not_restore_fails_the_run_naming_the_counts_and_why(capsys):
    args = argparse.Namespace(cache_mib=8, interval=1.0, duration=2.0, rate=5.0, json=None)
    with pytest.raises(RuntimeError, match=r"restored 0 of the 12 prompts saved") as refused:
        checkpoint_bench.run(args)
    assert "no run can start from" in str(refused.value)  # the engine's warning, which says why
    # what it does while the cache is built and restored, which took minutes at a large --cache-mib without a word
    out = capsys.readouterr().out
    assert "building a cache of 8 MiB: 12 prompts x 5 SD-XL latents ..." in out
    assert "starting an engine (sim backend) to restore it ..." in out


def test_a_cache_restored_whole_passes():
    log = (
        "2026-12-05 20:31:18,646 INFO argus.cache[1]: prompt cache restored from /tmp/c/x.argus: 1638 prompts\n"
        "2026-12-05 20:31:18,646 INFO argus.cache[1]: serving from the restored prompt cache\n"
    )
    checkpoint_bench._check_restored(log, 1638)
    with pytest.raises(RuntimeError, match="restored 1,638 of the 1,639 prompts"):
        checkpoint_bench._check_restored(log, 1639)
