"""Counts and figures in words: `1 worker`, `2 workers` (the reports printed `1 workers`, `sending 1 requests`),
`3,905 s` (printed `3.9e+03 s`) and `0.02%` (printed `0.0%`)."""


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun, plural unless n is 1 (`plural` for a noun that does not take an s)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def figure(value: float) -> str:
    """Three significant digits, and a figure that has more before its point whole: `.3g` alone wrote an hour's run as
    'run 3.9e+03 s' and a generator 1.6 s behind as 'max send lag 1.6e+03 ms'."""
    # from 999.5 on, `.3g` rounds to 1e+03 and up
    return f"{value:,.0f}" if abs(value) >= 999.5 else f"{value:.3g}"


def percent(share: float, decimals: int) -> str:
    """`share` in percent to `decimals` places, or as many more as it takes for a share that is neither none nor all
    to read as neither: 1 violation in 4,508 was printed 'SLO violations 0.0%', and a level of 1 image in 300 'K=25:
    0%' beside 'K=0: 100%'."""
    text = f"{share:.{decimals}%}"
    while 0 < share < 1 and float(text[:-1]) in (0.0, 100.0) and decimals < 16:
        decimals += 1
        text = f"{share:.{decimals}%}"
    return text
