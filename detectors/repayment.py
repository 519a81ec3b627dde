"""Repayment behaviour drifting away from the customer's own habit, before arrears.

Three signals per collection: how many days after the due date money came
(``days_late``, negative when early), what share of the instalment it covered
(``paid_ratio``), and whether the collection failed (``failed``). The
customer model holds a slowly moving baseline of each (starting from a prior
of an on-time, full, successful payer worth ``prior_weight`` payments) and a
one-sided CUSUM per signal: ``C = max(0, C + z - k)`` with ``z`` the deviation
from the baseline in its own units (a few days, 15 % of the instalment, a
failure). A customer who always paid two days early and now pays on the due
date, then three days late, then short, accumulates evidence long before any
DPD threshold; one late payment followed by a return to habit decays away.

The score is the sum of the three CUSUMs after this event. An analyst's
"false positive" on a drift warning empties the CUSUMs (the baseline keeps
what it learned).

>>> det = RepaymentDrift()
>>> m = det.init()
>>> for _ in range(6):
...     det.learn_one({"repaid": 1.0, "days_late": -2.0, "paid_ratio": 1.0}, m)
>>> det.score_one({"repaid": 1.0, "days_late": -2.0, "paid_ratio": 1.0}, m)
0.0
>>> for late, ratio in ((0.0, 1.0), (3.0, 0.8), (6.0, 0.6)):
...     det.learn_one({"repaid": 1.0, "days_late": late, "paid_ratio": ratio}, m)
>>> det.score_one({"failed": 1.0, "days_late": 8.0}, m) > 5
True
"""

from __future__ import annotations

from typing import ClassVar

from detectors.base import CustomerDetector, CustomerModel, Features, clip, num

PRIOR = (-1.0, 1.0, 0.03)  # days late, paid ratio, failure rate


class RepaymentDrift(CustomerDetector):
    """One-sided CUSUMs of lateness, shortfall and failure against the customer's habit."""

    name: ClassVar[str] = "repayment_drift"
    code_version: ClassVar[str] = "1"

    def __init__(
        self,
        *,
        slack: float = 0.5,
        alpha_min: float = 0.1,
        prior_weight: float = 3.0,
        late_scale_floor: float = 1.5,
        ratio_scale: float = 0.15,
        fail_scale: float = 0.5,
    ) -> None:
        self.slack = slack
        self.alpha_min = alpha_min
        self.prior_weight = prior_weight
        self.late_scale_floor = late_scale_floor
        self.ratio_scale = ratio_scale
        self.fail_scale = fail_scale

    def init(self) -> CustomerModel:
        return {"n": 0, "b": list(PRIOR), "sl": 2.0, "c": [0.0, 0.0, 0.0]}

    def _cusums(self, x: Features, model: CustomerModel) -> list[float] | None:
        failed = num(x, "failed") > 0
        repaid = num(x, "repaid") > 0
        if not (failed or repaid):
            return None
        base_late, base_ratio, base_fail = model["b"]
        c = list(model["c"])
        k = self.slack
        if repaid and "days_late" in x:
            z = (num(x, "days_late") - base_late) / max(model["sl"], self.late_scale_floor)
            c[0] = max(0.0, c[0] + clip(z, -4.0, 6.0) - k)
        if repaid and "paid_ratio" in x:
            z = (base_ratio - clip(num(x, "paid_ratio", 1.0), 0.0, 1.2)) / self.ratio_scale
            c[1] = max(0.0, c[1] + clip(z, -4.0, 6.0) - k)
        z = ((1.0 if failed else 0.0) - base_fail) / self.fail_scale
        c[2] = max(0.0, c[2] + clip(z, -4.0, 6.0) - k)
        return c

    def explain(self, x: Features, model: CustomerModel) -> dict[str, float]:
        c = self._cusums(x, model)
        if c is None:
            c = model["c"]
        return {"later": round(c[0], 4), "smaller": round(c[1], 4), "failing": round(c[2], 4)}

    def score_one(self, x: Features, model: CustomerModel) -> float:
        return self.score_parts(x, model)[0]

    def score_parts(self, x: Features, model: CustomerModel) -> tuple[float, dict[str, float]]:
        parts = self.explain(x, model)
        return float(sum(parts.values())), parts

    def feedback(self, x: Features, model: CustomerModel, label: bool) -> None:
        """A false positive: the drift was explained (a changed pay date...); start afresh."""
        if not label:
            model["c"] = [0.0, 0.0, 0.0]

    def observe_flagged(self, x: Features, model: CustomerModel) -> None:
        c = self._cusums(x, model)
        if c is not None:
            model["c"] = [round(v, 4) for v in c]

    def learn_one(self, x: Features, model: CustomerModel) -> None:
        c = self._cusums(x, model)
        if c is None:
            return
        model["c"] = [round(v, 4) for v in c]
        n = model["n"]
        alpha = max(1.0 / (n + 1 + self.prior_weight), self.alpha_min)
        base = model["b"]
        failed = num(x, "failed") > 0
        if not failed and "days_late" in x:
            late = clip(num(x, "days_late"), -30.0, 60.0)
            model["sl"] = round(
                model["sl"] + alpha * (min(abs(late - base[0]), 10.0) - model["sl"]), 4
            )
            base[0] = round(base[0] + alpha * (late - base[0]), 4)
        if not failed and "paid_ratio" in x:
            base[1] = round(
                base[1] + alpha * (clip(num(x, "paid_ratio", 1.0), 0.0, 1.2) - base[1]), 4
            )
        base[2] = round(base[2] + alpha * ((1.0 if failed else 0.0) - base[2]), 4)
        model["n"] = n + 1
