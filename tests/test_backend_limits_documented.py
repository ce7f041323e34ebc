"""README's "What each takes" says the sizes and batch sizes workers/limits.py holds each backend to: users plan
requests and --max-batch by it."""

import re

from engine_process import ROOT
from workers.limits import BACKEND_MAX_BATCH, BACKEND_SIZES, SizeLimits


def test_readme_says_what_each_backend_takes():
    said = " ".join((ROOT / "README.md").read_text().split())
    sizes = re.search(
        r"multiples of (\d+), from (\d+) to (\d+) for `tiny` \(`auto`: (\d+)\), (\d+) to (\d+) for `sdxl` and (\d+) to"
        r" (\d+) for `sim` \(`auto`: (\d+)\)",
        said,
    )
    batches = re.search(r"batches of up to (\d+) images \(`tiny`, `sim`\) or (\d+) \(`sdxl`\)", said)
    assert sizes and batches, "README no longer says what each backend takes in the words this test reads"
    multiple, *numbers = map(int, sizes.groups())
    assert {multiple} == {limits.multiple for limits in BACKEND_SIZES.values()}
    tiny_min, tiny_max, tiny_default, sdxl_min, sdxl_max, sim_min, sim_max, default = numbers
    assert BACKEND_SIZES == {
        "tiny": SizeLimits(tiny_min, tiny_max, tiny_default),
        "sdxl": SizeLimits(sdxl_min, sdxl_max, default),
        "sim": SizeLimits(sim_min, sim_max, default),
    }
    small, sdxl = map(int, batches.groups())
    assert BACKEND_MAX_BATCH == {"tiny": small, "sdxl": sdxl, "sim": small}
