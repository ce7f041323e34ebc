"""What GET /ready says: whether the engine serves, and what a client or a load balancer needs to send it requests
(the capacity `--load` multiplies, the sizes and steps it takes, its workers)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from protocols.limits import MAX_STEPS

if TYPE_CHECKING:
    from engine.server import Engine


def readiness(engine: Engine) -> dict:
    workers = engine.registry.registered()
    sizes = engine.admission.size_limits()
    unbounded = _unbounded(engine)
    return {
        # a worker taken out of rotation as failing is listed, but serves no one
        "ready": engine.running and engine.registry.in_rotation > 0,
        # why not, in words (None when ready): a 503 alone sent whoever read it to the log and the metrics
        "reason": _not_ready_because(engine, workers),
        "state": engine.state.value,
        # the saved cache is still being read: requests are served meanwhile, from what was cached since the start
        "cache_restoring": engine.cache.restoring,
        # images/s the ready workers serve exactly (K = 0) within the SLO: what `--load` multiplies. By the profile
        # the controller plans with now: scaled by the workers' pace once it strays far from the profile's. Images of
        # the default steps, which loadgen sends: a profile measured at 30 steps said 1.5 times what they serve
        "exact_capacity_rps": None if unbounded else _exact_capacity_rps(engine),
        # why exact_capacity_rps is null (None when it is a number)
        "exact_capacity_reason": UNBOUNDED if unbounded else None,
        # what a request may ask for (every registered worker's, else the --backend's): a client checks its
        # size and steps before it sends a run of requests each refused invalid_size
        "sizes": {
            "min": sizes.min_size,
            "max": sizes.max_size,
            "default": sizes.default_size,
            "multiple": sizes.multiple,
        },
        "steps": {
            "default": engine.admission.default_steps(),
            "max": MAX_STEPS,
            "refused": sorted(engine.admission.refused_steps()),
        },
        "workers": [
            {
                "name": w.name,
                "backend": w.hello.backend,
                "device": w.hello.device,
                "pid": w.hello.pid,
                "level": w.level,
                "load": w.load,
                "simulated": w.hello.simulated,
                "state": w.state.value,  # ready, or failing: out of rotation (engine/dispatch/failing_workers.py)
            }
            for w in workers
        ],
    }


# sim workers at --time-scale 0 take no time for an image: the profile scaled by it (to a millionth, the controller
# needing times above 0) said hundreds of thousands of images/s a worker, which loadgen's --load multiplied
UNBOUNDED = "its sim workers run at --time-scale 0, where an image takes no time: no capacity bounds them"


def _unbounded(engine: Engine) -> bool:
    return engine.config.launch.backend == "sim" and engine.config.launch.time_scale == 0


def _exact_capacity_rps(engine: Engine) -> float:
    return engine.registry.in_rotation * engine.control.policy.profile.at_any_steps.capacity_rps(
        0, engine.admission.default_steps(), engine.control.slo_s
    )


def _not_ready_because(engine: Engine, workers: tuple) -> str | None:
    if not engine.running:
        return f"the engine is {engine.state.value}: it admits no request"
    if engine.registry.in_rotation:
        return None
    if workers:
        held = "its worker" if len(workers) == 1 else f"each of its {len(workers)} workers"
        return f"{held} is taken out of rotation, its batches failing"
    # "is", not "has": said too once the workers that connected have left (it said none had said hello, as if they
    # had never come up)
    on_its_way, coming = engine.outlook.coming(time.monotonic())
    # the slots of its own by state, where one is on its way (else each is given up, as `coming` says)
    return f"no worker is connected{_own_slots(engine) if on_its_way else ''}; {coming}"


def _own_slots(engine: Engine) -> str:
    # the states of argus_workers the launchers count the engine's own slots in before a hello, in words. A slot given
    # up is tried again, said so that no one restarts the engine to have it tried
    retry_s = engine.config.launch.given_up_retry_s
    slot_states = {
        "starting": "starting (loading the model)",
        "restarting": "restarting",
        "failed": f"given up (tried again every {retry_s:g} s)",
    }
    # the gauge's own samples, read once: the registry's get_sample_value collected every metric for each state
    (workers,) = engine.metrics.workers.collect()
    counted = {sample.labels["state"]: sample.value for sample in workers.samples}
    said = [f"{counted[state]:g} {words}" for state, words in slot_states.items() if counted.get(state)]
    return f": of its own, {', '.join(said)}" if said else ""
