"""The quality the engine expects of each image it serves, whatever the backend: an estimate, not a measurement.

A real backend (tiny, sdxl) reports no quality of its images, and an operator's first question of an engine that
trades quality for latency is what its clients are getting. The controller plans with a quality for each level and
similarity; the engine tells each image's, in its reply and in /metrics (engine/dispatch/dispatcher.py).
"""

from __future__ import annotations

from controller.profiles import DegradationMatrix, QualityModel


class QualityEstimate:
    """Percent of the exact image an image served at level K (of the default steps) from a neighbour of similarity s
    is expected to be: 100 at K = 0; else, given measured qualities (`argus serve --quality-profile`), the mean
    measured for s's similarity class at K, and without them the quality model's expected value at (K, s).

    Called for every image the engine serves, on its event loop: about 0.3 us (the model's constants per level are
    worked out once, the class is one pass over five thresholds), against the engine's ~120 us per request."""

    def __init__(self, model: QualityModel, measured: DegradationMatrix | None = None):
        self._model = model
        self._measured = measured

    def __call__(self, level: int, similarity: float | None) -> float | None:
        """None for an image resumed with no similarity known, which the engine never serves: an estimate is a figure
        to report, and raising here, as the model does, would lose the batch's replies it is worked out among."""
        if not level:
            return 100.0
        if similarity is None:
            return None
        if self._measured is None:
            return self._model.expected(level, similarity)
        return self._measured.quality(level, self._measured.table.level_for(similarity))
