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
from typing import Any, ClassVar

from detectors.base import CustomerDetector, CustomerModel, Features, as_num, q4

DAY = 86400.0
_NAN = math.nan
_EXP = math.exp
_EXPM1 = math.expm1
_LOG = math.log
# kind: (feature flag, short window s, long window s, prior rate per day, prior events)
KINDS: dict[str, tuple[str, float, float, float, float]] = {
    "d": ("debit", 3600.0, 30 * DAY, 2.0, 4.0),
    "c": ("cash", 6 * 3600.0, 30 * DAY, 1.0 / 14.0, 2.0),
    "f": ("failed", 7 * DAY, 180 * DAY, 1.0 / 120.0, 1.0),
}


class VelocityBurst(CustomerDetector):
    """Bursts of debits, cash withdrawals and failed collections (see module docstring)."""

    name: ClassVar[str] = "velocity_burst"
    code_version: ClassVar[str] = "2"

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
        # kind, flag, short window, long window, prior events / prior exposure (s)
        self._kinds = tuple(
            (k, flag, windows[k], long, prior, prior * DAY / rate)
            for k, (flag, _, long, rate, prior) in KINDS.items()
        )

    def init(self) -> CustomerModel:
        return {}

    # -- one pass: what the stack calls ----------------------------------------------

    def begin(self, x: Features, model: CustomerModel) -> tuple[float, Any]:
        """The largest deviance over the kinds ``x`` is; the memo holds the decayed counts."""
        ts = as_num(x.get("ts"), _NAN)
        if ts != ts:
            return 0.0, None
        t0 = model.get("t0", ts)
        elapsed = ts - t0 if ts > t0 else 0.0
        touched = []
        best = 0.0
        for kind, flag, short, long, prior, prior_exposure in self._kinds:
            value = x.get(flag)
            if value is None:
                continue
            if not (value.__class__ is float and value > 0.0) and as_num(value) <= 0.0:
                continue
            state = model.get(kind)
            if state is None:
                k = level = 0.0
                last = ts
            else:
                s, lng, last = state
                dt = ts - last if ts > last else 0.0
                k = s * _EXP(-dt / short)
                level = lng * _EXP(-dt / long)
            exposure = long * -_EXPM1(-elapsed / long)
            expected = (level + prior) / (exposure + prior_exposure) * short
            deviance = k * _LOG(k / expected) - (k - expected) if k > expected else 0.0
            if deviance > 1e6:
                deviance = 1e6
            if deviance > best:
                best = deviance
            touched.append((kind, flag, k, level, last, deviance))
        if not touched:
            return 0.0, None  # neither a debit nor a failed collection
        return best, (ts, touched)

    def parts(self, memo: Any, model: CustomerModel) -> dict[str, float]:
        if memo is None:
            return {}
        return {flag: q4(deviance) for _, flag, _, _, _, deviance in memo[1]}

    def finish(self, memo: Any, model: CustomerModel, learn: bool) -> None:
        """Count the event in the run; in the norm too unless the threshold refused it."""
        if memo is None:
            return
        ts, touched = memo
        if "t0" not in model:
            model["t0"] = ts
        norm = 1.0 if learn else 0.0
        for kind, _, k, level, last, _ in touched:
            model[kind] = [q4(k + 1.0), q4(level + norm), ts if ts > last else last]

    # -- the river shape -------------------------------------------------------------

    def score_one(self, x: Features, model: CustomerModel) -> float:
        return self.begin(x, model)[0]

    def explain(self, x: Features, model: CustomerModel) -> dict[str, float]:
        return self.parts(self.begin(x, model)[1], model)

    def learn_one(self, x: Features, model: CustomerModel) -> None:
        self.finish(self.begin(x, model)[1], model, True)

    def observe_flagged(self, x: Features, model: CustomerModel) -> None:
        self.finish(self.begin(x, model)[1], model, False)

    def feedback(self, x: Features, model: CustomerModel, label: bool) -> None:
        """A false positive: the run is the customer's normal after all, so it joins the norm."""
        if label:
            return
        for kind, flag, *_ in self._kinds:
            state = model.get(kind)
            if state is not None and as_num(x.get(flag)) > 0.0:
                state[1] = q4(state[1] + state[0])
