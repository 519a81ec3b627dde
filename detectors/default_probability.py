"""An online probability-of-default model trained from late labels, calibrated.

The model is river's ``StandardScaler | LogisticRegression`` over the
customer's risk features (:data:`FEATURES`, built by
:func:`detectors.features.risk_x`). Its raw output is passed through a
running Platt scaling (``sigmoid(a * logit + b)``) fitted *prequentially*:
each labelled example first updates the calibrator with the score the model
gave it before seeing its label, then trains the model.

A model with no labels knows nothing, and labels take months to come. So the
score starts from a *prior*: a small expert scorecard (:data:`PRIOR`: days
past due, failed collections, late payments, restructuring, diverted funds,
income trouble, drifting repayments... each with a weight, and an intercept
for a few per cent of defaults), blended in logit space with the calibrated
model, the prior's weight ``min_labels / (min_labels + labels)`` shrinking as
labels arrive. The score ranks customers sensibly from the first day and is
the model's own once it has learned (``creditwatch evaluate`` measures both).

Labels come late: a default is known months after the features that
predicted it. A bounded per-customer *book* of feature snapshots (one per
``snapshot_every_days``, at most ``max_snapshots``, values in the fixed
:data:`FEATURES` order) lives in the customer's state:

* :meth:`DefaultProbability.remember` adds a snapshot at a decision time and
  returns the snapshots that have survived ``horizon_days`` without a default:
  they are good examples (label False) to :meth:`feedback` to the model.
* :meth:`DefaultProbability.resolve` on ``outcome.default`` returns every
  snapshot still held with label True (the features as they were, not as
  they are now), and on a full repayment with label False; the book is
  emptied.

``learn_one`` does nothing (the model needs labels); ``feedback(x, label)``
is the supervised update.

>>> pd_model = DefaultProbability(min_labels=20)
>>> book = pd_model.new_book()
>>> pd_model.remember({"max_dpd": 0.0}, 0.0, book)
[]
>>> len(book["s"])
1
>>> pairs = pd_model.resolve(book, defaulted=True)
>>> [label for _, label in pairs], book["s"]
([True], [])
>>> for i in range(400):
...     bad = i % 5 == 0
...     pd_model.feedback({"max_dpd": 0.6 if bad else 0.0, "failed_streak": 0.5 * bad}, bad)
>>> p_bad = pd_model.score_one({"max_dpd": 0.6, "failed_streak": 0.5})
>>> p_good = pd_model.score_one({"max_dpd": 0.0, "failed_streak": 0.0})
>>> 0.0 < p_good < 0.2 < 0.5 < p_bad < 1.0
True
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from river import linear_model, optim, preprocessing

from detectors.base import CustomerModel, Detector, Features, clip, num

FEATURES: tuple[str, ...] = (
    "max_dpd",
    "failed_streak",
    "failed_30d",
    "late_share",
    "partial_payments",
    "restructured",
    "diverted_share",
    "debt_to_income",
    "income_late",
    "income_dropped",
    "cash_share_30d",
    "balance_to_income",
    "drift_score",
)
DAY = 86400.0

PRIOR_INTERCEPT = -3.5
PRIOR: dict[str, float] = {
    "max_dpd": 3.0,  # 90 days past due: +3
    "failed_streak": 2.0,
    "failed_30d": 1.5,
    "late_share": 1.0,
    "partial_payments": 0.5,
    "restructured": 1.0,
    "diverted_share": 1.0,
    "debt_to_income": 1.0,
    "income_late": 1.0,
    "income_dropped": 0.7,
    "cash_share_30d": 0.5,
    "balance_to_income": -0.5,
    "drift_score": 1.0,
}
"""The prior scorecard's weights on :data:`FEATURES` (logit per unit of feature)."""


def _logit(p: float) -> float:
    p = clip(p, 1e-6, 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    z = clip(z, -35.0, 35.0)
    return 1.0 / (1.0 + math.exp(-z))


class DefaultProbability(Detector):
    """Calibrated online logistic regression over :data:`FEATURES`, with delayed labels."""

    name: ClassVar[str] = "default_probability"
    code_version: ClassVar[str] = "2"

    def __init__(
        self,
        *,
        learning_rate: float = 0.05,
        l2: float = 1e-4,
        calibration_rate: float = 0.02,
        min_labels: int = 50,
        horizon_days: float = 120.0,
        snapshot_every_days: float = 30.0,
        max_snapshots: int = 5,
        seed: int = 42,
    ) -> None:
        self.learning_rate = learning_rate
        self.l2 = l2
        self.calibration_rate = calibration_rate
        self.min_labels = min_labels
        self.horizon_days = horizon_days
        self.snapshot_every_days = snapshot_every_days
        self.max_snapshots = max_snapshots
        self.seed = seed  # the model is deterministic; kept for a uniform registry
        self.model = preprocessing.StandardScaler() | linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), l2=l2
        )
        self.a = 1.0
        self.b = 0.0
        self.labels = 0
        self.positives = 0

    # -- the model ---------------------------------------------------------------

    @staticmethod
    def _vector(x: Features) -> dict[str, float]:
        return {key: num(x, key) for key in FEATURES}

    def _raw_logit(self, vector: dict[str, float]) -> float:
        return _logit(self.model.predict_proba_one(vector).get(True, 0.5))

    def base_rate(self) -> float:
        """The smoothed share of defaults among the labels seen (prior 5 %)."""
        return (self.positives + 1.0) / (self.labels + 20.0)

    def score_one(self, x: Features) -> float:
        """The probability that this customer defaults within the horizon."""
        vector = self._vector(x)
        prior = PRIOR_INTERCEPT + sum(w * vector[key] for key, w in PRIOR.items())
        weight = self.min_labels / (self.min_labels + self.labels) if self.min_labels else 0.0
        if weight >= 1.0:
            return _sigmoid(prior)
        learned = self.a * self._raw_logit(vector) + self.b
        return _sigmoid(weight * prior + (1.0 - weight) * learned)

    def learn_one(self, x: Features) -> None:
        """Nothing to learn without a label: see :meth:`feedback`."""

    def feedback(self, x: Features, label: bool) -> None:
        """Learn one labelled example (True: defaulted within the horizon)."""
        vector = self._vector(x)
        y = 1.0 if label else 0.0
        if self.labels >= 1:
            z = self._raw_logit(vector)  # prequential: scored before it is learned
            error = _sigmoid(self.a * z + self.b) - y
            self.a = clip(self.a - self.calibration_rate * error * z, 0.05, 20.0)
            self.b = clip(self.b - self.calibration_rate * error, -20.0, 20.0)
        self.model.learn_one(vector, bool(label))
        self.labels += 1
        self.positives += int(label)

    # -- delayed labels ------------------------------------------------------------

    def new_book(self) -> CustomerModel:
        """An empty per-customer snapshot book (lives in the customer's state)."""
        return {"s": []}

    def remember(self, x: Features, at: float, book: CustomerModel) -> list[tuple[dict, bool]]:
        """Snapshot ``x`` at Unix time ``at`` (at most one per period); return matured goods."""
        snaps: list[list[float]] = book["s"]
        matured: list[tuple[dict[str, Any], bool]] = []
        while snaps and at - snaps[0][0] >= self.horizon_days * DAY:
            matured.append((self._unpack(snaps.pop(0)), False))
        if not snaps or at - snaps[-1][0] >= self.snapshot_every_days * DAY:
            snaps.append([round(at), *(round(num(x, key), 4) for key in FEATURES)])
            del snaps[: -self.max_snapshots]
        return matured

    def resolve(self, book: CustomerModel, *, defaulted: bool) -> list[tuple[dict, bool]]:
        """Every snapshot held, labelled; the book is emptied."""
        pairs = [(self._unpack(s), defaulted) for s in book["s"]]
        book["s"] = []
        return pairs

    @staticmethod
    def _unpack(snapshot: list[float]) -> dict[str, Any]:
        return dict(zip(FEATURES, snapshot[1:], strict=False))
