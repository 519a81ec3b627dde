"""Recognising a customer's recurring income and noticing when it is late or cut.

A salary is what keeps a retail loan serviceable, and the first sign of
trouble is often that it stops arriving, weeks before a repayment is missed.
Income is recognised two ways: a credit from ``counterparty_type: employer``
is salary from the first one; any other counterparty that credits the account
at a steady monthly cadence (three or more credits 25-35 days apart, amounts
within a third of each other) is learned as recurring income. For the primary
income the expected next date and amount are kept, so lateness (past the
expected date plus a grace period) and a sharp drop can be judged.

>>> inc = Income()
>>> day = 86400
>>> inc.observe("E1", 0, 800000, employer=True)
>>> inc.observe("E1", 30 * day, 800000, employer=True)
>>> inc.primary, inc.expected_at() == 60 * day
('E1', True)
>>> inc.observe("E1", 61 * day, 300000, employer=True)
>>> inc.last_drop is not None
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DAY = 86400
MONTH_DAYS = 30.4
SOURCES_KEPT = 4


@dataclass(slots=True)
class Source:
    """One counterparty that credits the account."""

    last_at: int
    last_cents: int
    count: int = 1
    interval_days: float = 0.0  # running mean of the gaps between credits
    mean_cents: float = 0.0
    employer: bool = False
    regular: int = 0  # credits that arrived at a monthly cadence with a steady amount

    def to_list(self) -> list[Any]:
        # Full precision: a rounded cadence would move the expected date, and a state
        # read back from Redis would judge differently from the one kept in memory.
        return [
            self.last_at,
            self.last_cents,
            self.count,
            self.interval_days,
            self.mean_cents,
            int(self.employer),
            self.regular,
        ]

    @classmethod
    def from_list(cls, d: list[Any]) -> Source:
        return cls(d[0], d[1], d[2], float(d[3]), float(d[4]), bool(d[5]), d[6])


@dataclass(slots=True)
class Income:
    """The customer's income sources and what is expected next."""

    sources: dict[str, Source] = field(default_factory=dict)
    primary: str | None = None
    late_alerted_for: int | None = None  # expected instant already reported late
    last_drop: tuple[int, int, int] | None = None  # (at, cents, usual cents), transient
    dropped_at: int | None = None  # the last primary credit was a sharp drop

    def observe(
        self, counterparty: str, at: int, cents: int, *, employer: bool, drop_share: float = 0.3
    ) -> None:
        """A credit from ``counterparty`` of ``cents`` at Unix time ``at``.

        A primary-income credit below ``(1 - drop_share)`` of the usual amount
        is remembered in ``last_drop`` until the next credit.
        """
        self.last_drop = None
        src = self.sources.get(counterparty)
        if src is None:
            self.sources[counterparty] = Source(
                at, cents, mean_cents=float(cents), employer=employer
            )
            self._evict()
        else:
            if at <= src.last_at:  # a late or repeated credit does not move the cadence
                return
            gap = (at - src.last_at) / DAY
            steady = 0.66 * src.mean_cents <= cents <= 1.5 * src.mean_cents
            src.regular = src.regular + 1 if 25 <= gap <= 35 and steady else 0
            usual = src.mean_cents
            if src.count >= 1 and self.primary == counterparty and cents < usual * (1 - drop_share):
                self.last_drop = (at, cents, round(usual))
            src.interval_days = gap if src.count == 1 else (src.interval_days * 0.7 + gap * 0.3)
            if steady:  # a cut does not redefine what is usual
                src.mean_cents = src.mean_cents * 0.7 + cents * 0.3
            src.count += 1
            src.last_at, src.last_cents = at, cents
            src.employer = src.employer or employer
        self._choose_primary()

    def _evict(self) -> None:
        while len(self.sources) > SOURCES_KEPT:
            victim = min(
                (k for k in self.sources if k != self.primary),
                key=lambda k: (self.sources[k].count, self.sources[k].last_at),
            )
            del self.sources[victim]

    def recognised(self, name: str) -> bool:
        src = self.sources[name]
        return src.employer or src.regular >= 2

    def _choose_primary(self) -> None:
        candidates = [k for k in self.sources if self.recognised(k)]
        if candidates:
            self.primary = max(candidates, key=lambda k: (self.sources[k].mean_cents, k))

    def expected_at(self) -> int | None:
        """When the next primary income credit is due (Unix time)."""
        if self.primary is None:
            return None
        src = self.sources[self.primary]
        interval = src.interval_days if src.count >= 2 else MONTH_DAYS
        return src.last_at + round(interval * DAY)

    def expected_cents(self) -> int | None:
        if self.primary is None:
            return None
        return round(self.sources[self.primary].mean_cents)

    def overdue_since(self, now: int, grace_days: int) -> int | None:
        """The expected instant if the primary income is later than the grace allows."""
        expected = self.expected_at()
        if expected is None or now <= expected + grace_days * DAY:
            return None
        return expected

    def to_list(self) -> list[Any]:
        return [
            {k: s.to_list() for k, s in self.sources.items()},
            self.primary,
            self.late_alerted_for,
            self.dropped_at,
        ]

    @classmethod
    def from_list(cls, d: list[Any]) -> Income:
        return cls(
            sources={k: Source.from_list(v) for k, v in d[0].items()},
            primary=d[1],
            late_alerted_for=d[2],
            dropped_at=d[3],
        )
