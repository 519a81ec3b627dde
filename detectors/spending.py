"""Spending that drifts away from the customer's habit: slowly, debit by debit.

No single purchase of a slow drift is unusual (so :mod:`detectors.transaction`
stays quiet and no rule threshold is crossed), but week after week the
amounts creep up and the merchants change. This detector accumulates that
evidence with two one-sided CUSUMs over the customer's purchases (debits on
the ``card`` and ``online`` channels):

* **amount**: ``z = (log(1 + amount) - mu) / s`` against a slowly learned
  baseline of the log-amount (``mu``, and ``s``, a mean absolute deviation,
  both moved by residuals clipped at ``3 s`` so one big purchase is not a
  trend), clipped to [-3, 3];
* **merchant mix**: the purchase's merchant-category rarity for this customer,
  ``log((top + 0.5) / (count + 0.5))``, minus its own running mean ``r``:
  about 0 on average while the mix is the usual one, 2-3 per purchase at
  merchants the customer never used.

Each CUSUM is ``C = max(0, C + z - slack)``: noise around the habit drains
it, a persistent shift of a fraction of a scale per purchase fills it. The
score is the sum of the two after the purchase; it is 0 during a warm-up of
``warm_up`` purchases. While the threshold flags a drift the baseline does
not learn from it (so the drift cannot teach itself to be normal) but the
CUSUMs keep counting; an analyst's "false positive" accepts the new level as
the customer's habit and empties them.

The customer model: ``n``, ``mu``, ``s``, ``r``, ``mc`` (bounded merchant
counts, ``tp`` the highest), ``c`` (the two CUSUMs) and ``f`` (a fast-moving log-amount: the
level an accepted drift re-anchors the baseline to), about 200 bytes as JSON.

>>> det = SpendingDrift(warm_up=10)
>>> m = det.init()
>>> shop = {"direction": "debit", "channel": "card"}
>>> for i in range(40):
...     det.learn_one({**shop, "amount": 40.0 + i % 20, "mcc": "5411"}, m)
>>> det.score_one({**shop, "amount": 50.0, "mcc": "5411"}, m)
0.0
>>> scores = []
>>> for i in range(12):  # amounts creep up, at new kinds of merchants
...     x = {**shop, "amount": 50.0 * 1.25 ** i, "mcc": "5944" if i % 2 else "5732"}
...     scores.append(det.score_one(x, m))
...     det.learn_one(x, m)
>>> scores[0] < 3.0 < 10.0 < scores[-1]
True
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from detectors.base import CustomerDetector, CustomerModel, Features, as_num, q4
from detectors.transaction import count

_LOG = math.log
_LOG1P = math.log1p
PURCHASE_CHANNELS = frozenset({"card", "online"})


class SpendingDrift(CustomerDetector):
    """CUSUMs of purchase amounts and merchant mix against the customer's habit."""

    name: ClassVar[str] = "spending_drift"
    code_version: ClassVar[str] = "1"

    def __init__(
        self,
        *,
        warm_up: int = 20,
        alpha_min: float = 0.02,
        slack: float = 0.75,
        mix_slack: float = 0.75,
        scale_floor: float = 0.25,
        map_size: int = 12,
        cap: float = 60.0,
        alpha_fast: float = 0.2,
    ) -> None:
        self.alpha_fast = alpha_fast
        self.warm_up = warm_up
        self.alpha_min = alpha_min
        self.slack = slack
        self.mix_slack = mix_slack
        self.scale_floor = scale_floor
        self.map_size = map_size
        self.cap = cap

    def init(self) -> CustomerModel:
        return {"n": 0, "mu": 0.0, "s": 0.5, "f": 0.0, "r": 0.0, "mc": {}, "tp": 0, "c": [0.0, 0.0]}

    # -- one pass: what the stack calls ----------------------------------------------

    def begin(self, x: Features, model: CustomerModel) -> tuple[float, Any]:
        """Score a purchase; the memo is (log-amount, mcc, rarity, the CUSUMs after it)."""
        if x.get("direction") == "credit" or x.get("channel") not in PURCHASE_CHANNELS:
            return 0.0, None
        amount = as_num(x.get("amount"), -1.0)
        if amount <= 0.0:
            return 0.0, None
        la = _LOG1P(amount)
        mcc = x.get("mcc")
        if not isinstance(mcc, str):
            mcc = None
        top = model["tp"]
        rarity = None
        if mcc is not None and top:
            rarity = _LOG((top + 0.5) / (model["mc"].get(mcc, 0) + 0.5))
            rarity = 0.0 if rarity < 0.0 else 6.0 if rarity > 6.0 else rarity
        if model["n"] < self.warm_up:
            return 0.0, (la, mcc, rarity, None)
        c_amount, c_mix = model["c"]
        s = model["s"]
        z = (la - model["mu"]) / (s if s > self.scale_floor else self.scale_floor)
        z = -3.0 if z < -3.0 else 3.0 if z > 3.0 else z
        c_amount = c_amount + z - self.slack
        c_amount = 0.0 if c_amount < 0.0 else self.cap if c_amount > self.cap else c_amount
        if rarity is not None:
            zm = rarity - model["r"]
            zm = -3.0 if zm < -3.0 else 3.0 if zm > 3.0 else zm
            c_mix = c_mix + zm - self.mix_slack
            c_mix = 0.0 if c_mix < 0.0 else self.cap if c_mix > self.cap else c_mix
        return c_amount + c_mix, (la, mcc, rarity, (c_amount, c_mix))

    def parts(self, memo: Any, model: CustomerModel) -> dict[str, float]:
        if memo is None or memo[3] is None:
            return {}
        return {"amount": q4(memo[3][0]), "merchant_mix": q4(memo[3][1])}

    def finish(self, memo: Any, model: CustomerModel, learn: bool) -> None:
        if memo is None:
            return
        la, mcc, rarity, cusums = memo
        if cusums is not None:
            c_amount, c_mix = cusums
            model["c"] = [q4(c_amount) if c_amount else 0.0, q4(c_mix) if c_mix else 0.0]
        f = model["f"]
        model["f"] = q4(la if model["n"] == 0 else f + self.alpha_fast * (la - f))
        if learn:
            self._learn(la, mcc, rarity, model)

    def _learn(
        self, la: float, mcc: str | None, rarity: float | None, model: CustomerModel
    ) -> None:
        n = model["n"]
        if n == 0:
            model["mu"] = q4(la)
        else:
            alpha = max(1.0 / (n + 1), self.alpha_min)
            s = model["s"]
            bound = 3.0 * (s if s > self.scale_floor else self.scale_floor)
            r = la - model["mu"]
            c = -bound if r < -bound else bound if r > bound else r
            model["mu"] = q4(model["mu"] + alpha * c)
            model["s"] = q4(s + alpha * (min(abs(r), bound) - s))
            if rarity is not None:
                model["r"] = q4(model["r"] + alpha * (rarity - model["r"]))
        if mcc is not None:
            model["tp"] = count(model["mc"], mcc, self.map_size, 500, model["tp"])
        model["n"] = n + 1

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
        """A false positive: the new level is the customer's habit now; start afresh from it."""
        if label:
            return
        model["c"] = [0.0, 0.0]
        if model["n"]:
            model["mu"] = model["f"]
        if x:
            memo = self.begin(x, model)[1]
            if memo is not None:
                self._learn(memo[0], memo[1], memo[2], model)
