"""Sudden runs of debits, cash withdrawals or failed repayments against the customer's norm.

For each kind of event the customer model keeps two exponentially decayed
counts: a short one (the run going on now: an hour for debits, six hours for
cash, a week for failed collections) and a long one (the customer's norm:
30 days, 180 for failures), plus when each was last touched. The norm is a
rate with a prior (``prior_rate``, worth ``prior_events`` events) so a new
customer is neither silent nor alarming.

The score for an event is the Poisson deviance of the *other* events of its
kind in the short window against what the norm predicts for that window
(``k log(k/E) - (k - E)`` when ``k > E``): the event itself is not evidence of
a run, the company it keeps is. A weekly ATM withdrawal scores 0; the eighth
in an hour scores about 25.

>>> det = VelocityBurst()
>>> m = det.init()
>>> week = 7 * 86400.0
>>> for i in range(8):  # one cash withdrawal a week
...     x = {"ts": i * week, "debit": 1.0, "cash": 1.0}
...     _ = det.score_one(x, m); det.learn_one(x, m)
>>> det.score_one({"ts": 8 * week, "debit": 1.0, "cash": 1.0}, m)
0.0
>>> for i in range(7):  # then seven more within the hour
...     det.learn_one({"ts": 8 * week + 60.0 * (i + 1), "debit": 1.0, "cash": 1.0}, m)
>>> det.score_one({"ts": 8 * week + 600.0, "debit": 1.0, "cash": 1.0}, m) > 15
True
"""

from __future__ import annotations

import math
from typing import ClassVar

from detectors.base import CustomerDetector, CustomerModel, Features, num

DAY = 86400.0
# kind: (feature flag, short window s, long window s, prior rate per day, prior events)
KINDS: dict[str, tuple[str, float, float, float, float]] = {
    "d": ("debit", 3600.0, 30 * DAY, 2.0, 4.0),
    "c": ("cash", 6 * 3600.0, 30 * DAY, 1.0 / 14.0, 2.0),
    "f": ("failed", 7 * DAY, 180 * DAY, 1.0 / 120.0, 1.0),
}


class VelocityBurst(CustomerDetector):
    """Bursts of debits, cash withdrawals and failed collections (see module docstring)."""

    name: ClassVar[str] = "velocity_burst"
    code_version: ClassVar[str] = "1"

    def __init__(
        self,
        *,
        debit_window_s: float = 3600.0,
        cash_window_s: float = 6 * 3600.0,
        failed_window_s: float = 7 * DAY,
    ) -> None:
        self.debit_window_s = debit_window_s
        self.cash_window_s = cash_window_s
        self.failed_window_s = failed_window_s
        windows = {"d": debit_window_s, "c": cash_window_s, "f": failed_window_s}
        self._kinds = {
            k: (flag, windows[k], long, rate, prior)
            for k, (flag, _, long, rate, prior) in KINDS.items()
        }

    def init(self) -> CustomerModel:
        return {}

    def explain(self, x: Features, model: CustomerModel) -> dict[str, float]:
        ts = num(x, "ts", math.nan)
        if math.isnan(ts):
            return {}
        parts: dict[str, float] = {}
        for kind, (flag, short, long, rate, prior) in self._kinds.items():
            if num(x, flag) <= 0:
                continue
            s, lng, last = model.get(kind, (0.0, 0.0, ts))
            dt = max(ts - last, 0.0)
            k = s * math.exp(-dt / short)
            level = lng * math.exp(-dt / long)
            elapsed = max(ts - model.get("t0", ts), 0.0)
            exposure = long * -math.expm1(-elapsed / long)
            expected = (level + prior) / (exposure + prior * DAY / rate) * short
            deviance = k * math.log(k / expected) - (k - expected) if k > expected else 0.0
            parts[flag] = round(min(deviance, 1e6), 4)
        return parts

    def score_one(self, x: Features, model: CustomerModel) -> float:
        return self.score_parts(x, model)[0]

    def score_parts(self, x: Features, model: CustomerModel) -> tuple[float, dict[str, float]]:
        parts = self.explain(x, model)
        return float(max(parts.values(), default=0.0)), parts

    def learn_one(self, x: Features, model: CustomerModel) -> None:
        self._update(x, model, norm=True)

    def observe_flagged(self, x: Features, model: CustomerModel) -> None:
        self._update(x, model, norm=False)

    def _update(self, x: Features, model: CustomerModel, *, norm: bool) -> None:
        ts = num(x, "ts", math.nan)
        if math.isnan(ts):
            return
        model.setdefault("t0", ts)
        for kind, (flag, short, long, _, _) in self._kinds.items():
            if num(x, flag) <= 0:
                continue
            s, lng, last = model.get(kind, (0.0, 0.0, ts))
            dt = max(ts - last, 0.0)
            s = s * math.exp(-dt / short) + 1.0
            lng = lng * math.exp(-dt / long) + (1.0 if norm else 0.0)
            model[kind] = [round(s, 4), round(lng, 4), max(ts, last)]
