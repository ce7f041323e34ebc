"""Where the shared data lies: `shared/data` beside the checkout (real traces, real prompts, published figures).

Defaults are found from the code's own place, not the working directory, so a
command's defaults work from any directory the user runs it in.
"""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PROMPTS_DIR = SHARED_DATA / "prompts"
TRACES_DIR = SHARED_DATA / "traces"
DIFFUSIONDB_PROMPTS = PROMPTS_DIR / "diffusiondb_5k.txt"
