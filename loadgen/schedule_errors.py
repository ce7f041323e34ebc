"""Why a schedule came out with too few arrivals, or cannot be sent, in the words of the flags that made it (`argus
loadgen`'s and `argus bench compare`'s). A trace thinned to nothing said 'the schedule is empty (check --duration-s and
--time-scale)', naming flags the user had not given, or let a Python None into the message."""

from __future__ import annotations

from collections.abc import Sequence

from loadgen.arrivals import LOAD_WINDOW_S, Arrival, mean_rate, truncate
from loadgen.prompts import pair_prompts
from loadgen.wording import counted, figure


def thinned_too_far(
    said: str, trace: str, base: Sequence[Arrival], rate: float, seed: int, kept: int, *, by_load: bool, need: str = ""
) -> str:
    """`said` (the flags that asked for `rate`, on the trace's clock) thinned the trace `base` to `kept` arrivals:
    too few for a run (`need`: how many one needs, when not one). `by_load`: --load sized it by its busiest minute."""
    own = mean_rate(base)
    text = (
        f"{said} thins --trace {trace} ({counted(len(base), 'arrival')} at {own:.3g}/s) to {rate:.3g}/s on its own"
        f" clock: each arrival is kept with probability {rate / own:.2g}, and --seed {seed} kept"
        f" {f'only {kept}' if kept else 'none'}{need}"
    )
    if by_load and base[-1].offset_s - base[0].offset_s <= LOAD_WINDOW_S:
        text += f"; a trace of {LOAD_WINDOW_S:g} s or less is its own busiest minute, so --load sets its mean rate"
    return text + "; ask for a higher rate, or pass --rescale stretch to keep every arrival"


def cut_too_far(duration_s: float, schedule: Sequence[Arrival], clock: str, need: str = "") -> str:
    """--duration-s kept too few of `schedule`'s arrivals (offsets in seconds `clock` says what of)."""
    kept = truncate(schedule, duration_s=duration_s)
    if not kept:
        where = f": the first comes at {figure(schedule[0].offset_s)} s{clock}"
    elif kept[-1].offset_s == kept[0].offset_s:
        where = f", all at {figure(kept[0].offset_s)} s{clock}"
    else:
        where = f", from {figure(kept[0].offset_s)} s to {figure(kept[-1].offset_s)} s{clock}"
    return f"--duration-s {duration_s:g} keeps {len(kept)} of the {counted(len(schedule), 'arrival')}{where}{need}"


def unpaired_prompts(schedule: Sequence[Arrival], prompts: Sequence[str], trace: str, prompts_path: str) -> str | None:
    """Why `schedule` (from --trace) cannot be sent with `prompts` (from --prompts): an arrival names a prompt past
    their end; None if it can. Checked before the run: run_load pairs them too, but only once an engine is started
    or the run announced, and without naming the files."""
    try:
        pair_prompts(schedule, prompts)
    except ValueError as exc:
        return f"--trace {trace}: {exc} in --prompts {prompts_path}"
    return None
