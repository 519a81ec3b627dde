"""Bounded rolling windows of a customer's transactions, in event time.

A customer who transacts a thousand times a day must cost no more memory than
one who transacts once, so windows are bucketed aggregates, never lists of
events. Three resolutions cover the four windows the features need:

========  ==============  ======  ============
window    bucket size     kept    used for
========  ==============  ======  ============
1 hour    5 minutes       12      ``1h``
24 hours  1 hour          24      ``24h``
30 days   1 day           31      ``7d``, ``30d``
========  ==============  ======  ============

Each bucket maps a short code to ``[count, amount in minor units]``. A late
event (up to the allowed lateness) lands in the buckets of its own time, not
of its arrival, at every resolution whose window still covers it; one later
than the allowed lateness is counted as too late instead of distorting a
window.

A window "as of" instant ``t`` sums the buckets that overlap ``(t - window, t]``,
so it can over-count by up to one bucket at its far edge (5 minutes, 1 hour or
1 day): precise enough for early warning, bounded in memory.

>>> w = Windows()
>>> t = 1_767_225_600  # 2026-01-01T00:00:00Z
>>> w.add(t, {"-k": 1250})
True
>>> w.add(t + 60, {"-k": 750})
True
>>> w.total("-k", 3600, t + 120)
(2, 2000)
>>> w.total("-k", 3600, t + 7200)
(0, 0)
>>> w.total("-k", 86400, t + 7200)
(2, 2000)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# (bucket seconds, buckets kept)
RESOLUTIONS: tuple[tuple[int, int], ...] = ((300, 12), (3600, 24), (86400, 31))
WINDOW_RESOLUTION: dict[int, int] = {3600: 300, 86400: 3600, 7 * 86400: 86400, 30 * 86400: 86400}


def resolution_for(window_seconds: int) -> int:
    """The finest bucket size whose retention covers ``window_seconds``."""
    if window_seconds in WINDOW_RESOLUTION:
        return WINDOW_RESOLUTION[window_seconds]
    for size, kept in RESOLUTIONS:
        if size * kept >= window_seconds:
            return size
    raise ValueError(f"no resolution keeps a {window_seconds}s window")


@dataclass(slots=True)
class Windows:
    """Bucketed counts and sums per code, at three resolutions."""

    buckets: dict[int, dict[int, dict[str, list[int]]]] = field(
        default_factory=lambda: {size: {} for size, _ in RESOLUTIONS}
    )
    newest: int = 0  # latest event time seen (Unix seconds)
    too_late: int = 0
    lateness: int = 48 * 3600

    def add(self, at: int, codes: dict[str, int], *, counts: dict[str, int] | None = None) -> bool:
        """Add one event at Unix time ``at``; ``codes`` maps code to amount (minor units).

        ``counts`` overrides the count added per code (default 1); returns
        False when the event is later than the allowed lateness.
        """
        if self.newest and at < self.newest - self.lateness:
            self.too_late += 1
            return False
        self.newest = max(self.newest, at)
        for size, kept in RESOLUTIONS:
            index = at // size
            if index < self.newest // size - kept + 1:  # outside this window as of now
                continue
            bucket = self.buckets[size].setdefault(index, {})
            for code, amount in codes.items():
                slot = bucket.get(code)
                n = 1 if counts is None else counts.get(code, 1)
                if slot is None:
                    bucket[code] = [n, amount]
                else:
                    slot[0] += n
                    slot[1] += amount
            self._prune(size, kept)
        return True

    def set_last(self, at: int, code: str, value: int) -> None:
        """Record a level (e.g. a balance) as the last value of its day bucket."""
        size = 86400
        if self.newest and at < self.newest - self.lateness:
            return
        bucket = self.buckets[size].setdefault(at // size, {})
        previous = bucket.get(code)
        if previous is None or at >= previous[0]:
            bucket[code] = [at, value]

    def _prune(self, size: int, kept: int) -> None:
        floor = self.newest // size - kept + 1
        stale = [i for i in self.buckets[size] if i < floor]
        for i in stale:
            del self.buckets[size][i]

    def total(self, code: str, window_seconds: int, as_of: int) -> tuple[int, int]:
        """(count, amount) of ``code`` over the window ending at ``as_of``."""
        size = resolution_for(window_seconds)
        first = (as_of - window_seconds) // size
        last = as_of // size
        n = amount = 0
        for index, bucket in self.buckets[size].items():
            if first <= index <= last:
                slot = bucket.get(code)
                if slot is not None:
                    n += slot[0]
                    amount += slot[1]
        return n, amount

    def totals(self, prefix: str, window_seconds: int, as_of: int) -> dict[str, tuple[int, int]]:
        """Every code starting with ``prefix`` over the window, summed per code."""
        size = resolution_for(window_seconds)
        first = (as_of - window_seconds) // size
        last = as_of // size
        out: dict[str, list[int]] = {}
        for index, bucket in self.buckets[size].items():
            if first <= index <= last:
                for code, (n, amount) in bucket.items():
                    if code.startswith(prefix):
                        slot = out.setdefault(code, [0, 0])
                        slot[0] += n
                        slot[1] += amount
        return {code: (n, a) for code, (n, a) in out.items()}

    def levels(self, code: str, window_seconds: int, as_of: int) -> list[tuple[int, int]]:
        """(day index, last value) of a level code over the window, oldest first."""
        first = (as_of - window_seconds) // 86400
        last = as_of // 86400
        return sorted(
            (index, bucket[code][1])
            for index, bucket in self.buckets[86400].items()
            if first <= index <= last and code in bucket
        )

    def to_list(self) -> list[Any]:
        return [
            self.newest,
            self.too_late,
            [sorted([i, b] for i, b in self.buckets[size].items()) for size, _ in RESOLUTIONS],
        ]

    @classmethod
    def from_list(cls, data: list[Any], *, lateness: int) -> Windows:
        newest, too_late, per_size = data
        buckets = {
            size: {int(i): b for i, b in rows}
            for (size, _), rows in zip(RESOLUTIONS, per_size, strict=True)
        }
        return cls(buckets=buckets, newest=newest, too_late=too_late, lateness=lateness)
