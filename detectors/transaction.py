"""How unlike a customer's own history one debit is: amount, time of week, channel,
country and merchant category.

The customer model is a small dict (about 250 bytes as JSON):

* ``mu``, ``s``: a robust running location and scale (mean absolute deviation)
  of the log-amount. Residuals are clipped at ``3 s`` before they move
  either, so one 50,000 purchase among 50s neither drags the centre nor
  inflates the spread (heavy tails).
* ``h``: 28 counts, day of week x six-hour block of the customer's local time
  (the weekly rhythm), halved when they grow large so old habits fade; ``b``
  are the four blocks' totals over the week and ``t`` the grand total.
* ``ch``, ``co``, ``mc``: bounded frequency maps of channel, country and
  merchant category (the rarest entry is evicted when full); ``tp`` their
  highest counts.

Each part contributes a surprisal (in nats, roughly "how many times less
likely than the customer's usual"); the score is their weighted sum. Credits
are not scored (salary is not spending). Nothing is scored during a warm-up of
``warm_up`` debits. A slow, sustained change of spending is not a surprise of
one debit: :mod:`detectors.spending` watches for that.

An analyst's "false positive" on a debit this detector flagged teaches it the
debit after all (the threshold had kept it out of the customer's norm).

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
['amount', 'channel', 'country', 'mcc', 'time']
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from detectors.base import CustomerDetector, CustomerModel, Features, as_num, q4

MAP_KEYS = (("channel", "ch"), ("country", "co"), ("mcc", "mc"))
PART_NAMES = ("amount", "time", "channel", "country", "mcc")
_LOG = math.log
_LOG1P = math.log1p
_ONE_IN_28 = 1.0 / 28.0


class TransactionAnomaly(CustomerDetector):
    """Per-customer novelty of a debit (see the module docstring)."""

    name: ClassVar[str] = "transaction_anomaly"
    code_version: ClassVar[str] = "2"

    def __init__(
        self,
        *,
        warm_up: int = 20,
        alpha_min: float = 0.03,
        scale_floor: float = 0.15,
        hist_cap: int = 200,
        map_sizes: tuple[int, int, int] = (7, 6, 10),
        weights: tuple[float, float, float, float, float] = (1.0, 1.5, 0.7, 1.0, 0.5),
    ) -> None:
        self.warm_up = warm_up
        self.alpha_min = alpha_min
        self.scale_floor = scale_floor
        self.hist_cap = hist_cap
        self.map_sizes = map_sizes
        self.weights = weights  # amount, time, channel, country, mcc

    def init(self) -> CustomerModel:
        return {
            "n": 0,
            "mu": 0.0,
            "s": 0.5,
            "h": [0] * 28,
            "b": [0] * 4,
            "t": 0,
            "ch": {},
            "co": {},
            "mc": {},
            "tp": [0, 0, 0],
        }

    # -- one pass: what the stack calls ----------------------------------------------

    def begin(self, x: Features, model: CustomerModel) -> tuple[float, Any]:
        """Score a debit; the memo is (log-amount, week cell, (channel, country, mcc), parts)."""
        if x.get("direction") == "credit":
            return 0.0, None
        amount = as_num(x.get("amount"), -1.0)
        la = _LOG1P(amount) if amount > 0.0 else None
        how = as_num(x.get("hour_of_week"), -1.0)
        cell = int(how) // 24 * 4 + int(how) % 24 // 6 if 0.0 <= how < 168.0 else None
        channel, country, mcc = x.get("channel"), x.get("country"), x.get("mcc")
        keys = (
            channel if isinstance(channel, str) else None,
            country if isinstance(country, str) else None,
            mcc if isinstance(mcc, str) else None,
        )
        if model["n"] < self.warm_up:
            return 0.0, (la, cell, keys, None)
        w_amount, w_time, w_channel, w_country, w_mcc = self.weights
        p_amount = p_time = 0.0
        if la is not None:
            s = model["s"]
            z = (la - model["mu"]) / (s if s > self.scale_floor else self.scale_floor) - 1.0
            p_amount = w_amount * (0.0 if z < 0.0 else 20.0 if z > 20.0 else z)
        total = model["t"]
        if cell is not None and total:
            # the mean of this cell's and (spread over 7 days) this block's frequency,
            # smoothed, against the 1 in 28 of a customer without a rhythm
            p = 0.5 * (
                (model["h"][cell] + 0.25) / (total + 7.0)
                + (model["b"][cell & 3] + 0.25) / (total + 1.0) / 7.0
            )
            surprise = _LOG(_ONE_IN_28 / p)
            p_time = w_time * (0.0 if surprise < 0.0 else 8.0 if surprise > 8.0 else surprise)
        top_channel, top_country, top_mcc = model["tp"]
        p_channel = w_channel * _rarity(keys[0], model["ch"], top_channel)
        p_country = w_country * _rarity(keys[1], model["co"], top_country)
        p_mcc = w_mcc * _rarity(keys[2], model["mc"], top_mcc)
        parts = (p_amount, p_time, p_channel, p_country, p_mcc)
        return p_amount + p_time + p_channel + p_country + p_mcc, (la, cell, keys, parts)

    def parts(self, memo: Any, model: CustomerModel) -> dict[str, float]:
        if memo is None or memo[3] is None:
            return {}
        return {name: q4(v) for name, v in zip(PART_NAMES, memo[3], strict=True)}

    def finish(self, memo: Any, model: CustomerModel, learn: bool) -> None:
        if learn and memo is not None:
            self._learn(memo[0], memo[1], memo[2], model)

    # -- the river shape -------------------------------------------------------------

    def score_one(self, x: Features, model: CustomerModel) -> float:
        return self.begin(x, model)[0]

    def explain(self, x: Features, model: CustomerModel) -> dict[str, float]:
        return self.parts(self.begin(x, model)[1], model)

    def learn_one(self, x: Features, model: CustomerModel) -> None:
        self.finish(self.begin(x, model)[1], model, True)

    def feedback(self, x: Features, model: CustomerModel, label: bool) -> None:
        """A false positive is the customer's own habit after all: learn it now."""
        if not label and x:
            self.learn_one(x, model)

    def _learn(self, la: float | None, cell: int | None, keys: tuple, model: CustomerModel) -> None:
        n = model["n"]
        if la is not None:
            if n == 0:
                model["mu"] = q4(la)
            else:
                alpha = 1.0 / (n + 1)
                if alpha < self.alpha_min:
                    alpha = self.alpha_min
                s = model["s"]
                bound = 3.0 * (s if s > self.scale_floor else self.scale_floor)
                r = la - model["mu"]
                c = -bound if r < -bound else bound if r > bound else r
                model["mu"] = q4(model["mu"] + alpha * c)
                model["s"] = q4(s + alpha * (min(abs(r), bound) - s))
        if cell is not None:
            hist, blocks = model["h"], model["b"]
            hist[cell] += 1
            blocks[cell & 3] += 1
            total = model["t"] + 1
            if total > self.hist_cap:
                hist[:] = [c // 2 for c in hist]
                blocks[:] = [sum(hist[b::4]) for b in range(4)]
                total = sum(hist)
            model["t"] = total
        channel, country, mcc = keys
        cap = self.hist_cap
        tops = model["tp"]
        if channel is not None:
            tops[0] = count(model["ch"], channel, self.map_sizes[0], cap, tops[0])
        if country is not None:
            tops[1] = count(model["co"], country, self.map_sizes[1], cap, tops[1])
        if mcc is not None:
            tops[2] = count(model["mc"], mcc, self.map_sizes[2], cap, tops[2])
        model["n"] = n + 1


def _rarity(value: str | None, counts: dict[str, int], top: int) -> float:
    """log(usual / this): 0 for the customer's most frequent value, ~5 for a new one."""
    if value is None or not top:
        return 0.0
    r = _LOG((top + 0.5) / (counts.get(value, 0) + 0.5))
    return 0.0 if r < 0.0 else 6.0 if r > 6.0 else r


def count(counts: dict[str, int], value: str, size: int, cap: int, top: int) -> int:
    """Count ``value`` in a bounded frequency map; returns the map's new highest count.

    A new value evicts the rarest when the map is full; when a count passes
    ``cap`` every count is halved (zeros dropped), so old habits fade.

    >>> c, top = {}, 0
    >>> for v in "aab":
    ...     top = count(c, v, 2, 3, top)
    >>> top, c
    (2, {'a': 2, 'b': 1})
    >>> count(c, "z", 2, 3, 2), c  # full: the rarest goes
    (2, {'a': 2, 'z': 1})
    >>> count(c, "a", 2, 3, 2), count(c, "a", 2, 3, 3), c  # past the cap: halved
    (3, 2, {'a': 2})
    """
    n = counts.get(value)
    if n is None:
        if len(counts) >= size:
            rarest = min(counts, key=counts.__getitem__)
            if counts.pop(rarest) == top:
                top = max(counts.values(), default=0)
        n = counts[value] = 1
    else:
        n = counts[value] = n + 1
    if n > cap:
        for key in list(counts):
            counts[key] //= 2
            if counts[key] == 0:
                del counts[key]
        return max(top, n) // 2
    return n if n > top else top
