"""The clock every alert stage reads, injected rather than taken from ``datetime.now``.

Cooldowns, group waits, silence windows, breaker windows and retry backoff
all compare times. Taking "now" from an injected clock lets the unit tests
walk through hours of alert traffic in microseconds, lets replay use event
time, and keeps the Redis scripts free of ``TIME`` (the caller passes the
instant, so a test can reproduce any ordering exactly).

>>> from datetime import UTC, datetime, timedelta
>>> clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
>>> clock.advance(timedelta(minutes=5)).isoformat()
'2026-01-01T00:05:00+00:00'
>>> to_ms(clock.now())
1767225900000
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "from_ms", "to_ms"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class Clock(Protocol):
    """Source of the current instant (timezone-aware)."""

    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock time in UTC: what a live worker uses."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to: for tests and for replay by event time.

    It never moves backwards on ``set``: a late event does not rewind the
    cooldowns that earlier ones started.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, by: timedelta) -> datetime:
        self._now += by
        return self._now

    def set(self, at: datetime) -> datetime:
        """Move to ``at`` if it is later than the current instant."""
        if at.tzinfo is None:
            raise ValueError("ManualClock.set needs a timezone-aware instant")
        self._now = max(self._now, at)
        return self._now


def to_ms(at: datetime) -> int:
    """Unix milliseconds of an aware instant (the unit of every stored time)."""
    if at.tzinfo is None:
        raise ValueError("a naive datetime has no instant; pass a timezone-aware one")
    return (at - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    """The UTC instant of Unix milliseconds."""
    return _EPOCH + ms * _MS
