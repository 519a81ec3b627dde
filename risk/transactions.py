"""Rolling transaction features of one customer, in event time and bounded memory.

What a post-loan desk looks at in an account: how much goes out and comes in
over the last hour, day, week and month, through which channels, how much is
withdrawn as cash, how much happens at night (the customer's night, in their
own time zone), whether a country or merchant category is new for them, where
transfers go, and whether the balance is sliding.

All of it is derived from :class:`risk.windows.Windows` buckets; the
per-customer memory does not grow with the number of transactions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from risk.windows import Windows

CHANNEL_CODE: dict[str, str] = {
    "card": "k",
    "atm": "a",
    "transfer": "t",
    "cash": "h",
    "direct_debit": "d",
    "online": "o",
    "branch": "b",
}
CODE_CHANNEL = {v: k for k, v in CHANNEL_CODE.items()}
WINDOWS: tuple[tuple[str, int], ...] = (
    ("1h", 3600),
    ("24h", 86400),
    ("7d", 7 * 86400),
    ("30d", 30 * 86400),
)
COUNTRIES_KEPT = 16
MCCS_KEPT = 40
CENT = Decimal("0.01")


def cents(amount: Decimal) -> int:
    """Money to integer minor units (two decimals; finer fractions are rounded)."""
    return int((amount / CENT).to_integral_value())


def money(minor: int) -> str:
    return str((Decimal(minor) * CENT).quantize(CENT))


@dataclass(slots=True)
class Observation:
    """What one transaction revealed, for warnings that fire on it."""

    night: bool
    new_country: bool
    new_mcc: bool


@dataclass(slots=True)
class TransactionFeatures:
    """The customer's transaction windows and what they have seen before."""

    windows: Windows = field(default_factory=Windows)
    countries: list[str] = field(default_factory=list)
    mccs: list[str] = field(default_factory=list)
    seen: int = 0

    def observe(
        self,
        *,
        at: int,
        amount: Decimal,
        direction: str,
        channel: str,
        local_hour: int,
        night_hours: tuple[int, int],
        country: str | None,
        mcc: str | None,
        counterparty_type: str | None,
        balance_after: Decimal | None,
        warm_up: int,
    ) -> Observation:
        """Add one posted transaction."""
        sign = "+" if direction == "credit" else "-"
        minor = cents(amount)
        start, end = night_hours
        night = (
            (local_hour >= start or local_hour < end)
            if start > end
            else (start <= local_hour < end)
        )
        new_country = self._first_use(self.countries, country, COUNTRIES_KEPT, warm_up)
        new_mcc = self._first_use(self.mccs, mcc, MCCS_KEPT, warm_up)
        codes = {f"{sign}{CHANNEL_CODE[channel]}": minor}
        if night:
            codes["n"] = minor
        if counterparty_type:
            codes[f"{sign}p:{counterparty_type}"] = minor
        if new_country:
            codes["nc"] = minor
        if new_mcc:
            codes["nm"] = minor
        accepted = self.windows.add(at, codes)
        if accepted and balance_after is not None:
            self.windows.set_last(at, "b", cents(balance_after))
        self.seen += 1
        return Observation(night and accepted, new_country, new_mcc)

    def _first_use(self, seen: list[str], value: str | None, kept: int, warm_up: int) -> bool:
        """Whether ``value`` is new for the customer (only after a warm-up of history)."""
        if value is None:
            return False
        if value in seen:
            seen.remove(value)
            seen.append(value)  # most recently used last
            return False
        seen.append(value)
        if len(seen) > kept:
            del seen[0]
        return self.seen >= warm_up

    def features(self) -> dict[str, Any]:
        """The rolling values, as of the latest transaction seen."""
        w = self.windows
        now = w.newest
        out: dict[str, Any] = {}
        if not now:
            return out
        for name, seconds in WINDOWS:
            for sign, direction in (("-", "debit"), ("+", "credit")):
                parts = w.totals(sign, seconds, now)
                n = sum(c for code, (c, _) in parts.items() if len(code) == 2)
                total = sum(a for code, (_, a) in parts.items() if len(code) == 2)
                out[f"tx_{name}_{direction}_count"] = n
                out[f"tx_{name}_{direction}_sum"] = money(total)
        month = 30 * 86400
        by_channel = {
            f"{CODE_CHANNEL[code[1]]}_{'credit' if code[0] == '+' else 'debit'}": [n, money(a)]
            for code, (n, a) in sorted(
                {**w.totals("-", month, now), **w.totals("+", month, now)}.items()
            )
            if len(code) == 2
        }
        out["tx_30d_by_channel"] = by_channel
        for name, seconds in WINDOWS[1:]:
            atm_n, atm_a = w.total("-a", seconds, now)
            cash_n, cash_a = w.total("-h", seconds, now)
            out[f"cash_withdrawals_{name}_count"] = atm_n + cash_n
            out[f"cash_withdrawals_{name}_sum"] = money(atm_a + cash_a)
        night_n, _ = w.total("n", month, now)
        all_n = out["tx_30d_debit_count"] + out["tx_30d_credit_count"]
        out["night_share_30d"] = round(night_n / all_n, 4) if all_n else 0.0
        out["new_countries_30d"] = w.total("nc", month, now)[0]
        out["new_merchant_categories_30d"] = w.total("nm", month, now)[0]
        transfers: dict[str, dict[str, str]] = {}
        for code, (_, amount) in sorted(
            {**w.totals("-p:", month, now), **w.totals("+p:", month, now)}.items()
        ):
            kind = code[3:]
            transfers.setdefault(kind, {})["out" if code[0] == "-" else "in"] = money(amount)
        out["transfers_30d_by_counterparty"] = transfers
        out["balance_trend_30d_per_day"] = self._trend(w.levels("b", month, now))
        out["late_transactions_ignored"] = w.too_late
        return out

    @staticmethod
    def _trend(levels: list[tuple[int, int]]) -> str | None:
        """Least-squares slope of the daily closing balance, per day."""
        if len(levels) < 2:
            return None
        n = len(levels)
        mean_x = sum(x for x, _ in levels) / n
        mean_y = sum(y for _, y in levels) / n
        var = sum((x - mean_x) ** 2 for x, _ in levels)
        if var == 0:
            return None
        slope = sum((x - mean_x) * (y - mean_y) for x, y in levels) / var
        return money(round(slope))

    def to_list(self) -> list[Any]:
        return [self.windows.to_list(), self.countries, self.mccs, self.seen]

    @classmethod
    def from_list(cls, d: list[Any], *, lateness: int) -> TransactionFeatures:
        return cls(Windows.from_list(d[0], lateness=lateness), d[1], d[2], d[3])
