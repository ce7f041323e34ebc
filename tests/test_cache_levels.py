"""`argus serve --levels`: the cache keeps latents at those levels alone, and the controller plans and serves them."""

import json

import numpy as np
from cache_room import room
from waiting import wait_for

from engine.cache.embedders import HashEmbedder
from engine.client import ArgusClient
from engine_process import start_engine
from protocols.client_messages import Images
from workers.limits import SIM_LATENT_SHAPE

PROMPT = "a lighthouse on a cliff at dusk"


def test_an_engine_keeps_plans_and_serves_the_levels_it_is_given(tmp_path):
    # Clipper-HT serves every hit at its top level: 20 of these, where it would be 25
    engine = start_engine(
        tmp_path, "--levels", "10,20", "--policy", "clipper-ht", "--time-scale", "0", workers=1, backend="sim"
    )
    try:
        with ArgusClient(engine.client_address) as client:
            first, again = (client.generate(PROMPT) for _ in range(2))
        assert isinstance(first, Images) and isinstance(again, Images)
        assert first.images[0].level == 0
        assert (again.images[0].level, again.images[0].steps_run) == (20, 30)
        status, body = engine.get("/plan")
        assert status == 200 and set(json.loads(body)["demand_rps"]) == {"0", "10", "20"}  # the classes planned
        # the worker brought back the two levels' latents alone (the others would have crossed the wire to be
        # dropped), and the cache kept both, with their prompt (the engine's hash embedder's vector)
        two_latents = 2 * np.zeros(SIM_LATENT_SHAPE, np.float16).nbytes
        held = room(two_latents, [PROMPT], HashEmbedder().dim, (10, 20))
        assert wait_for(lambda: engine.metric("argus_cache_bytes", tier="memory") == held)
    finally:
        assert engine.stop() == 0
