"""The detector contract, after river's ``anomaly/base.py``.

Two shapes share one rule: ``score_one`` before ``learn_one``, a float where
high means anomalous (or, for the default model, likely to default), and the
input is never mutated.

* :class:`Detector` holds its own state, like a river model: the population
  anomaly model (one per segment inside) and the default-probability model.
  They are shared by all customers a worker serves and persisted as a whole
  (:mod:`detectors.persistence`).
* :class:`CustomerDetector` holds no per-customer state itself: it is a set of
  pure functions over a compact, JSON-able dictionary (the *customer model*)
  that lives inside the customer's own state, so it travels with the customer
  through Redis and costs a few hundred bytes, not a pickled object.
  :class:`Bound` pairs one with one customer model to give the river shape
  (used by tests and the benchmark).

Both also offer the one-pass form the stack uses per event: ``begin`` scores
and keeps what learning will need (a *memo*), the threshold decides, and
``finish`` learns (or, for a customer detector, only observes a flagged
observation). A detector whose score and update share work (the tree paths of
Half-Space Trees, the decayed counts of a burst) does that work once; the
pair is always equivalent to ``score_one`` then ``learn_one`` (the contract
test checks it), and ``finish`` must follow its ``begin`` on the same model
with nothing in between. A memo of None says the event does not concern the
detector (a credit, for a spending model): the stack then records no finding
and feeds no threshold.

Feature dictionaries map names to floats or strings; a missing key means
"unknown" and an unknown key is ignored.

>>> class Loud(Detector):
...     name = "loud"
...     def learn_one(self, x): pass
...     def score_one(self, x): return float(x.get("volume", 0.0))
>>> Loud().score_one({"volume": 3})
3.0
>>> Loud().begin({"volume": 2})[0]
2.0
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, TypeAlias

Features: TypeAlias = Mapping[str, float | str]
CustomerModel: TypeAlias = dict[str, Any]

_INF = math.inf


class Detector(ABC):
    """A stateful online detector (river's ``AnomalyDetector`` contract)."""

    name: ClassVar[str]
    code_version: ClassVar[str] = "1"

    @abstractmethod
    def learn_one(self, x: Features) -> None:
        """Update the model with one observation (call after :meth:`score_one`)."""

    @abstractmethod
    def score_one(self, x: Features) -> float:
        """How anomalous ``x`` is; higher is more anomalous. Never mutates ``x``."""

    def feedback(self, x: Features, label: bool) -> None:  # noqa: B027 - optional hook
        """A verdict on ``x`` (True: a real problem). Ignored unless a detector uses it."""

    def begin(self, x: Features) -> tuple[float, Any]:
        """The score of ``x`` and a memo for :meth:`finish` (one pass over ``x``)."""
        return self.score_one(x), x

    def finish(self, memo: Any, learn: bool) -> None:
        """Learn what :meth:`begin` scored, unless ``learn`` is False."""
        if learn:
            self.learn_one(memo)


class CustomerDetector(ABC):
    """A detector whose per-customer state is a small JSON-able dict it does not own."""

    name: ClassVar[str]
    code_version: ClassVar[str] = "1"

    @abstractmethod
    def init(self) -> CustomerModel:
        """A fresh customer model (a new customer, or one whose model was reset)."""

    @abstractmethod
    def score_one(self, x: Features, model: CustomerModel) -> float:
        """How unlike this customer's own history ``x`` is. Mutates neither argument."""

    @abstractmethod
    def learn_one(self, x: Features, model: CustomerModel) -> None:
        """Fold ``x`` into the customer model, in place."""

    def observe_flagged(self, x: Features, model: CustomerModel) -> None:  # noqa: B027
        """Called instead of :meth:`learn_one` when a threshold refused to learn ``x``.

        A detector that tracks a run in progress (a burst, a drift) updates the
        run here while keeping ``x`` out of the customer's norm.
        """

    def explain(self, x: Features, model: CustomerModel) -> dict[str, float]:
        """The parts of the score, for a warning's explanation (default: none)."""
        return {}

    def score_parts(self, x: Features, model: CustomerModel) -> tuple[float, dict[str, float]]:
        """The score and its parts in one pass."""
        return self.score_one(x, model), self.explain(x, model)

    def feedback(self, x: Features, model: CustomerModel, label: bool) -> None:  # noqa: B027
        """A verdict on ``x`` (True: a real problem). Ignored unless a detector uses it."""

    # -- the stack's one-pass form ---------------------------------------------------

    def begin(self, x: Features, model: CustomerModel) -> tuple[float, Any]:
        """The score of ``x`` and a memo for :meth:`parts` and :meth:`finish`."""
        return self.score_one(x, model), x

    def parts(self, memo: Any, model: CustomerModel) -> dict[str, float]:
        """The score's parts from a :meth:`begin` memo (before :meth:`finish`)."""
        return self.explain(memo, model)

    def finish(self, memo: Any, model: CustomerModel, learn: bool) -> None:
        """Learn what :meth:`begin` scored, or only observe it when ``learn`` is False."""
        if learn:
            self.learn_one(memo, model)
        else:
            self.observe_flagged(memo, model)


class Bound(Detector):
    """A :class:`CustomerDetector` bound to one customer model: the river shape.

    >>> from detectors.velocity import VelocityBurst
    >>> b = Bound(VelocityBurst())
    >>> b.score_one({"ts": 0.0, "debit": 1.0})
    0.0
    >>> b.learn_one({"ts": 0.0, "debit": 1.0})
    """

    def __init__(self, detector: CustomerDetector, model: CustomerModel | None = None) -> None:
        self.detector = detector
        self.model = detector.init() if model is None else model
        self.name = detector.name  # type: ignore[misc]

    def learn_one(self, x: Features) -> None:
        self.detector.learn_one(x, self.model)

    def score_one(self, x: Features) -> float:
        return self.detector.score_one(x, self.model)

    def feedback(self, x: Features, label: bool) -> None:
        self.detector.feedback(x, self.model, label)

    def begin(self, x: Features) -> tuple[float, Any]:
        return self.detector.begin(x, self.model)

    def finish(self, memo: Any, learn: bool) -> None:
        self.detector.finish(memo, self.model, learn)


def num(x: Features, key: str, default: float = 0.0) -> float:
    """A finite float from ``x[key]``, or ``default`` when absent, not numeric or not finite.

    >>> num({"a": "7"}, "a"), num({"a": float("nan")}, "a", 1.0), num({}, "a")
    (0.0, 1.0, 0.0)
    >>> num({"a": True}, "a"), num({"a": 3}, "a"), num({"a": -float("inf")}, "a", 2.0)
    (1.0, 3.0, 2.0)
    """
    return as_num(x.get(key), default)


def as_num(value: Any, default: float = 0.0) -> float:
    """A finite float from ``value``, else ``default`` (the per-value form of :func:`num`)."""
    cls = value.__class__
    if cls is float:
        return value if -_INF < value < _INF else default  # NaN fails both comparisons
    if cls is bool:
        return float(value)
    if cls is int:
        return float(value) if -1e300 < value < 1e300 else default
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return default


def text(x: Features, key: str) -> str | None:
    """``x[key]`` if it is a string, else None."""
    value = x.get(key)
    return value if value.__class__ is str or isinstance(value, str) else None


def q4(value: float) -> float:
    """``value`` to 4 decimal places (what customer models keep: short as JSON).

    Twice as fast as ``round(value, 4)``, which models call on every event;
    halves round away from zero. ``value`` must be finite.

    >>> q4(0.123456), q4(-2.00005), q4(3.0)
    (0.1235, -2.0001, 3.0)
    """
    return int(value * 10000.0 + (0.5 if value >= 0.0 else -0.5)) / 10000.0


def clip(value: float, lo: float, hi: float) -> float:
    return lo if value < lo else hi if value > hi else value
