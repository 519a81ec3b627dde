"""Adaptive thresholds: a running quantile of each detector's scores, per segment.

Kept apart from the detectors, as in river's ``anomaly/filter.py``: a detector
says how unusual something is, the threshold says whether that is unusual
enough to warn about, and whether the detector should learn from it. With
``refuse_learning_when_flagged`` a flagged observation is not learned, so a
run of anomalies cannot teach the model that they are normal (the threshold
itself still sees every score, so it follows the score distribution). A
per-detector *floor* (:data:`DEFAULT_FLOORS`) keeps zero-inflated scores from
flagging every blip when the quantile itself is 0. A score must be strictly
above the quantile, so a detector whose score does not vary (the default
model before it has labels) flags nothing.

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
from typing import NamedTuple

from river import stats

from detectors.base import Detector, Features, text

_INF = math.inf

DEFAULT_FLOORS: dict[str, float] = {
    "transaction_anomaly": 5.0,
    "velocity_burst": 5.0,
    "repayment_drift": 3.0,
    "spending_drift": 6.0,
    "default_probability": 0.3,
}
"""Scores never flagged whatever the quantile says: most customers' scores are exactly
0 (no burst, no drift), so the quantile alone would flag any blip above 0, and a
small or young population's quantile is a rough one. The values are read off
``creditwatch evaluate`` (the scores of the customers without a story)."""


class Decision(NamedTuple):
    """What the threshold made of one score (a tuple: made for every score, so cheap)."""

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
        # detector -> segment -> [scores seen, their running quantile]
        self._slots: dict[str, dict[str, list]] = {}

    def _slot(self, detector: str, segment: str | None) -> list | None:
        return self._slots.get(detector, {}).get(segment or "unknown")

    def count(self, detector: str, segment: str | None) -> int:
        """How many finite scores of this detector and segment the threshold has seen."""
        slot = self._slot(detector, segment)
        return 0 if slot is None else slot[0]

    def threshold(self, detector: str, segment: str | None) -> float | None:
        """The current threshold, or None while this detector/segment is warming up."""
        slot = self._slot(detector, segment)
        if slot is None or slot[0] < self.min_count:
            return None
        return slot[1].get()

    def observe(self, detector: str, segment: str | None, score: float) -> Decision:
        """Judge ``score`` against the threshold as it stood, then update the threshold."""
        segments = self._slots.get(detector)
        if segments is None:
            segments = self._slots[detector] = {}
        slot = segments.get(segment or "unknown")
        if slot is None:
            slot = segments[segment or "unknown"] = [
                0,
                stats.Quantile(self.q_by_detector.get(detector, self.q)),
            ]
        count, quantile = slot
        threshold = quantile.get() if count >= self.min_count else None
        if -_INF < score < _INF:
            flagged = (
                threshold is not None
                and score > self.min_score
                and score > threshold
                and score >= self.floors.get(detector, 0.0)
            )
            quantile.update(score)
            slot[0] = count + 1
        else:
            flagged = False
        return Decision(
            score, threshold, flagged, not (flagged and self.refuse_learning_when_flagged)
        )


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
            and score > threshold
            and score >= t.floors.get(self.name, 0.0)
        )

    def learn_one(self, x: Features) -> None:
        decision = self.thresholds.observe(self.name, text(x, "segment"), self.score_one(x))
        if decision.learn:
            self.detector.learn_one(x)

    def feedback(self, x: Features, label: bool) -> None:
        self.detector.feedback(x, label)
