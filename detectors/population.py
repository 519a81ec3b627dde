"""How unusual a transaction's feature vector is within its segment (Half-Space Trees).

One river ``HalfSpaceTrees`` per segment (retail, sme, corporate...), created
on the segment's first transaction with a seed derived from ``seed`` and the
segment name, so equal seeds give equal scores whatever order segments appear
in. Features are the fixed numeric set :data:`FEATURES`, each already scaled
to [0, 1] by :func:`detectors.features.transaction_x`; values are clipped to
[0, 1] here and anything else in ``x`` is ignored. A missing feature is
handled by the trees (they follow the heavier branch).

Cost grows with ``n_trees`` and steeply with ``height`` (``bench/detectors_cost.py``
measures it); the defaults (5 trees of height 6, window 250) were chosen there.

Scores are river's: 0 during a segment's first window, then in [0, 1], high =
anomalous.

>>> det = PopulationAnomaly(seed=3, window_size=50)
>>> normal = {"segment": "retail", "log_amount": 0.3, "cash": 0.0, "night": 0.0}
>>> for i in range(300):
...     det.learn_one({**normal, "log_amount": 0.28 + 0.01 * (i % 5)})
>>> odd = {"segment": "retail", "log_amount": 0.95, "cash": 1.0, "night": 1.0}
>>> det.score_one(odd) > det.score_one(normal)
True
"""

from __future__ import annotations

import zlib
from typing import ClassVar

from river import anomaly

from detectors.base import Detector, Features, clip, text

FEATURES: tuple[str, ...] = (
    "log_amount",
    "hour_sin",
    "hour_cos",
    "weekend",
    "night",
    "cash",
    "online",
    "transfer",
    "new_country",
    "new_mcc",
    "to_income",
    "risky_counterparty",
)


class PopulationAnomaly(Detector):
    """Half-Space Trees per segment over :data:`FEATURES`."""

    name: ClassVar[str] = "population_anomaly"
    code_version: ClassVar[str] = "1"

    def __init__(
        self, *, n_trees: int = 5, height: int = 6, window_size: int = 250, seed: int = 42
    ) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.models: dict[str, anomaly.HalfSpaceTrees] = {}

    @staticmethod
    def _vector(x: Features) -> dict[str, float]:
        out: dict[str, float] = {}
        for key in FEATURES:
            value = x.get(key)
            if isinstance(value, int | float) and value == value:  # not NaN
                out[key] = clip(float(value), 0.0, 1.0)
        return out

    def _model(self, segment: str) -> anomaly.HalfSpaceTrees:
        model = self.models.get(segment)
        if model is None:
            seed = self.seed + zlib.crc32(segment.encode()) % 1_000_003
            model = self.models[segment] = anomaly.HalfSpaceTrees(
                n_trees=self.n_trees,
                height=self.height,
                window_size=self.window_size,
                limits={key: (0.0, 1.0) for key in FEATURES},
                seed=seed,
            )
        return model

    def score_one(self, x: Features) -> float:
        model = self.models.get(text(x, "segment") or "unknown")
        if model is None or not model.trees:
            return 0.0
        return float(model.score_one(self._vector(x)))

    def learn_one(self, x: Features) -> None:
        vector = self._vector(x)
        model = self._model(text(x, "segment") or "unknown")
        if not model.trees:
            # The trees are laid out over the features of the first observation:
            # lay them out over all of them, whatever this one happens to carry.
            vector = {key: vector.get(key, 0.0) for key in FEATURES}
        model.learn_one(vector)
