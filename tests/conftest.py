import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The suite shares two cores among pytest, engines and their workers: a torch that spreads each tiny convolution over
# every core (its default) spends most of a step waiting for a core another process holds (42 ms a tiny UNet step
# with one thread against 230 to 390 ms with two, measured while other processes ran). Set before anything imports
# torch, for this process and the workers tests start by hand; engines still give their workers the cores they
# divide among them (--threads).
os.environ.setdefault("OMP_NUM_THREADS", "1")
