"""Adaptive thresholds: a running quantile of each detector's scores, per segment.

Kept apart from the detectors, as in river's ``anomaly/filter.py``: a detector
says how unusual something is, the threshold says whether that is unusual
enough to warn about, and whether the detector should learn from it. With
``refuse_learning_when_flagged`` a flagged observation is not learned, so a
run of anomalies cannot teach the model that they are normal (the threshold
itself still sees every score, so it follows the score distribution). A
per-detector *floor* (:data:`DEFAULT_FLOORS`) keeps zero-inflated scores from
flagging every blip when the quantile itself is 0.

A threshold only exists after ``min_count`` scores of that detector in that
segment: nothing is flagged during its warm-up.

>>> t = Thresholds(q=0.9, min_count=50)
>>> for i in range(100):
...     _ = t.observe("velocity_burst", "retail", float(i % 10))
>>> 8.0 < t.threshold("velocity_burst", "retail") < 9.5
True
>>> d = t.observe("velocity_burst", "retail", 25.0)
>>> d.flagged, d.learn
(True, False)
>>> t.observe("velocity_burst", "sme", 25.0).flagged  # another segment: still warming up
False
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from river import stats

from detectors.base import Detector, Features, text

DEFAULT_FLOORS: dict[str, float] = {
    "transaction_anomaly": 3.0,
    "velocity_burst": 5.0,
    "repayment_drift": 3.0,
}
"""Scores never flagged whatever the quantile says: most customers' scores are exactly
0 (no burst, no drift), so the quantile alone would flag any blip above 0."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What the threshold made of one score."""

    score: float
    threshold: float | None
    flagged: bool
    learn: bool


class Thresholds:
    """One running quantile (river's P² ``stats.Quantile``) per (detector, segment)."""

    def __init__(
        self,
        q: float = 0.995,
        *,
        min_count: int = 200,
        q_by_detector: dict[str, float] | None = None,
        min_score: float = 0.0,
        floors: dict[str, float] | None = None,
        refuse_learning_when_flagged: bool = True,
    ) -> None:
        self.q = q
        self.min_count = min_count
        self.q_by_detector = dict(q_by_detector or {})
        self.min_score = min_score
        self.floors = dict(DEFAULT_FLOORS if floors is None else floors)
        self.refuse_learning_when_flagged = refuse_learning_when_flagged
        self._quantiles: dict[tuple[str, str], stats.Quantile] = {}
        self._counts: dict[tuple[str, str], int] = {}

    def threshold(self, detector: str, segment: str | None) -> float | None:
        """The current threshold, or None while this detector/segment is warming up."""
        key = (detector, segment or "unknown")
        if self._counts.get(key, 0) < self.min_count:
            return None
        return self._quantiles[key].get()

    def observe(self, detector: str, segment: str | None, score: float) -> Decision:
        """Judge ``score`` against the threshold as it stood, then update the threshold."""
        key = (detector, segment or "unknown")
        count = self._counts.get(key, 0)
        quantile = self._quantiles.get(key)
        threshold = quantile.get() if quantile is not None and count >= self.min_count else None
        finite = math.isfinite(score)
        flagged = (
            threshold is not None
            and finite
            and score > self.min_score
            and score >= threshold
            and score >= self.floors.get(detector, 0.0)
        )
        if finite:
            if quantile is None:
                quantile = self._quantiles[key] = stats.Quantile(
                    self.q_by_detector.get(detector, self.q)
                )
            quantile.update(score)
            self._counts[key] = count + 1
        learn = not (flagged and self.refuse_learning_when_flagged)
        return Decision(score, threshold, flagged, learn)


class ThresholdFilter(Detector):
    """A river-shaped detector behind a threshold (river's ``QuantileFilter``).

    ``learn_one`` scores first, updates the threshold, and learns only if the
    observation was not flagged (when learning is refused for flagged ones).

    >>> from detectors.population import PopulationAnomaly
    >>> f = ThresholdFilter(PopulationAnomaly(seed=1, window_size=20), Thresholds(min_count=10))
    >>> for i in range(60):
    ...     f.learn_one({"segment": "retail", "log_amount": 0.4 + 0.001 * (i % 7)})
    >>> f.classify(f.score_one({"segment": "retail", "log_amount": 0.4}))
    False
    """

    def __init__(self, detector: Detector, thresholds: Thresholds) -> None:
        self.detector = detector
        self.thresholds = thresholds
        self.name = detector.name  # type: ignore[misc]
        self._segment: str | None = None

    def score_one(self, x: Features) -> float:
        self._segment = text(x, "segment")
        return self.detector.score_one(x)

    def classify(self, score: float) -> bool:
        t = self.thresholds
        threshold = t.threshold(self.name, self._segment)
        return (
            threshold is not None
            and score > t.min_score
            and score >= max(threshold, t.floors.get(self.name, 0.0))
        )

    def learn_one(self, x: Features) -> None:
        decision = self.thresholds.observe(self.name, text(x, "segment"), self.score_one(x))
        if decision.learn:
            self.detector.learn_one(x)

    def feedback(self, x: Features, label: bool) -> None:
        self.detector.feedback(x, label)
