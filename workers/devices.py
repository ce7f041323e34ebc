"""Whether this host has the device a worker is asked to run on, said before anything is loaded or started; and
where a worker runs, for a log line."""

from __future__ import annotations


def on_device(device: str, simulated: bool) -> str:
    """`on cuda:0`; a simulated worker runs on no device (its config's default device, cpu, and its hello's, sim,
    both read as if it did)."""
    return "on no device" if simulated else f"on {device}"


def device_problem(device: str) -> str | None:
    """Why this host cannot run a model on `device` (a torch device name, engine/commands/arg_types.py), or None.
    Imports torch for a cuda or mps device only: a cpu or sim run is checked without it."""
    if not device.startswith(("cuda", "mps")):
        return None
    import torch

    parsed = torch.device(device)
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        built = "" if torch.backends.cuda.is_built() else ", this torch being built without CUDA"
        return f"torch sees {torch.cuda.device_count()} CUDA devices here{built}"
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        return "torch has no MPS device here (Apple silicon only)"
    return None
