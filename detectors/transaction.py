"""How unlike a customer's own history one debit is: amount, time of week, channel,
country, merchant category, and a drift of the usual amount.

The customer model is a small dict (about 250 bytes as JSON):

* ``mu``, ``s``: a robust running location and scale (mean absolute deviation)
  of the log-amount. Residuals are clipped at ``3 s`` before they move
  either, so one 50,000 purchase among 50s neither drags the centre nor
  inflates the spread (heavy tails). ``f`` is a fast-moving location: when it
  runs away from ``mu`` the customer's spending is shifting.
* ``h``: 28 counts, day of week x six-hour block of the customer's local time
  (the weekly rhythm), halved when they grow large so old habits fade.
* ``ch``, ``co``, ``mc``: bounded frequency maps of channel, country and
  merchant category (the rarest entry is evicted when full).

Each part contributes a surprisal (in nats, roughly "how many times less
likely than the customer's usual"); the score is their weighted sum. Credits
are not scored (salary is not spending). Nothing is scored during a warm-up of
``warm_up`` debits.

>>> det = TransactionAnomaly(warm_up=5)
>>> m = det.init()
>>> usual = {"amount": 50.0, "channel": "card", "country": "CN", "mcc": "5411",
...          "hour_of_week": 12.0}
>>> for i in range(30):
...     x = {**usual, "amount": 45.0 + i % 10, "hour_of_week": 10.0 + 24 * (i % 7)}
...     det.learn_one(x, m)
>>> det.score_one({**usual, "amount": 52.0, "hour_of_week": 34.0}, m) < 1.0
True
>>> odd = {**usual, "amount": 5000.0, "country": "TH", "hour_of_week": 3.0}
>>> det.score_one(odd, m) > 10.0
True
>>> sorted(det.explain(odd, m))
['amount', 'channel', 'country', 'mcc', 'shift', 'time']
"""

from __future__ import annotations

import math
from typing import ClassVar

from detectors.base import CustomerDetector, CustomerModel, Features, clip, num, text

MAP_KEYS = (("channel", "ch"), ("country", "co"), ("mcc", "mc"))


class TransactionAnomaly(CustomerDetector):
    """Per-customer novelty of a debit (see the module docstring)."""

    name: ClassVar[str] = "transaction_anomaly"
    code_version: ClassVar[str] = "1"

    def __init__(
        self,
        *,
        warm_up: int = 20,
        alpha_min: float = 0.03,
        alpha_fast: float = 0.25,
        scale_floor: float = 0.15,
        hist_cap: int = 200,
        map_sizes: tuple[int, int, int] = (7, 6, 10),
        weights: tuple[float, float, float, float, float, float] = (1.0, 1.5, 0.7, 1.0, 0.5, 1.0),
    ) -> None:
        self.warm_up = warm_up
        self.alpha_min = alpha_min
        self.alpha_fast = alpha_fast
        self.scale_floor = scale_floor
        self.hist_cap = hist_cap
        self.map_sizes = map_sizes
        self.weights = weights  # amount, time, channel, country, mcc, shift

    def init(self) -> CustomerModel:
        return {"n": 0, "mu": 0.0, "s": 0.5, "f": 0.0, "h": [0] * 28, "ch": {}, "co": {}, "mc": {}}

    # -- scoring ------------------------------------------------------------------

    def explain(self, x: Features, model: CustomerModel) -> dict[str, float]:
        if text(x, "direction") == "credit" or model.get("n", 0) < self.warm_up:
            return {}
        w_amount, w_time, w_channel, w_country, w_mcc, w_shift = self.weights
        parts: dict[str, float] = {}
        scale = max(model["s"], self.scale_floor)
        amount = num(x, "amount", -1.0)
        if amount > 0:
            z = (math.log1p(amount) - model["mu"]) / scale
            parts["amount"] = w_amount * clip(z - 1.0, 0.0, 20.0)
        else:
            parts["amount"] = 0.0
        parts["shift"] = w_shift * clip((model["f"] - model["mu"]) / scale - 1.0, 0.0, 10.0)
        parts["time"] = w_time * self._time_surprise(x, model["h"])
        for (key, short), weight in zip(MAP_KEYS, (w_channel, w_country, w_mcc), strict=True):
            parts[key] = weight * _rarity(text(x, key), model[short])
        return {k: round(v, 4) for k, v in parts.items()}

    def score_one(self, x: Features, model: CustomerModel) -> float:
        return self.score_parts(x, model)[0]

    def score_parts(self, x: Features, model: CustomerModel) -> tuple[float, dict[str, float]]:
        parts = self.explain(x, model)
        return float(sum(parts.values())), parts

    @staticmethod
    def _time_surprise(x: Features, hist: list[int]) -> float:
        how = num(x, "hour_of_week", -1.0)
        if not 0.0 <= how < 168.0:
            return 0.0
        total = sum(hist)
        if total == 0:
            return 0.0
        cell = _cell(how)
        block = cell % 4
        a = 0.25
        p_cell = (hist[cell] + a) / (total + 28 * a)
        p_block = (sum(hist[block::4]) + a) / (total + 4 * a) / 7.0
        p = 0.5 * (p_cell + p_block)
        return clip(math.log((1.0 / 28.0) / p), 0.0, 8.0)

    # -- learning -----------------------------------------------------------------

    def learn_one(self, x: Features, model: CustomerModel) -> None:
        if text(x, "direction") == "credit":
            return
        n = model["n"]
        amount = num(x, "amount", -1.0)
        if amount > 0:
            la = math.log1p(amount)
            if n == 0:
                model["mu"] = model["f"] = round(la, 4)
            else:
                alpha = max(1.0 / (n + 1), self.alpha_min)
                s = max(model["s"], self.scale_floor)
                r = la - model["mu"]
                c = clip(r, -3 * s, 3 * s)
                model["mu"] = round(model["mu"] + alpha * c, 4)
                model["s"] = round(model["s"] + alpha * (min(abs(r), 3 * s) - model["s"]), 4)
                fast = max(alpha, self.alpha_fast)
                model["f"] = round(model["f"] + fast * clip(la - model["f"], -3 * s, 3 * s), 4)
        how = num(x, "hour_of_week", -1.0)
        if 0.0 <= how < 168.0:
            hist = model["h"]
            hist[_cell(how)] += 1
            if sum(hist) > self.hist_cap:
                model["h"] = [c // 2 for c in hist]
        for (key, short), size in zip(MAP_KEYS, self.map_sizes, strict=True):
            value = text(x, key)
            if value is not None:
                _count(model[short], value, size, self.hist_cap)
        model["n"] = n + 1


def _cell(hour_of_week: float) -> int:
    """Day of week (Monday 0) x six-hour block: 0..27."""
    hour = int(hour_of_week)
    return (hour // 24) * 4 + (hour % 24) // 6


def _rarity(value: str | None, counts: dict[str, int]) -> float:
    """log(usual / this): 0 for the customer's most frequent value, ~5 for a new one."""
    if value is None or not counts:
        return 0.0
    top = max(counts.values())
    return clip(math.log((top + 0.5) / (counts.get(value, 0) + 0.5)), 0.0, 6.0)


def _count(counts: dict[str, int], value: str, size: int, cap: int) -> None:
    if value in counts:
        counts[value] += 1
    else:
        if len(counts) >= size:
            del counts[min(counts, key=counts.__getitem__)]
        counts[value] = 1
    if counts[value] > cap:
        for key in list(counts):
            counts[key] //= 2
            if counts[key] == 0:
                del counts[key]
