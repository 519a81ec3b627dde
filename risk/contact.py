"""When a collector may lawfully contact a customer: the customer's own calendar.

Collections rules in most markets forbid contact at night and on public
holidays, in the debtor's local time. Holidays come from the maintained
``holidays`` library, picked by the customer's ``holiday_calendar`` (an ISO
country code, optionally ``CC-SUBDIVISION``, e.g. ``CN``, ``US-CA``). China's
make-up working days (a Saturday or Sunday worked to bridge a holiday) are
working days even where weekends are skipped: the library lists them as
``weekend_workdays``.

A task that may not be sent yet is scheduled (its ``not_before`` moves
forward), never dropped.

>>> from datetime import datetime
>>> from zoneinfo import ZoneInfo
>>> policy = ContactPolicy(quiet_start=21, quiet_end=8, skip_weekends=True)
>>> sh = ZoneInfo("Asia/Shanghai")
>>> # 2026-02-16 is Chinese New Year's Eve; the break runs to the 23rd.
>>> next_lawful_contact(datetime(2026, 2, 15, 22, 0, tzinfo=sh), sh, "CN", policy).isoformat()
'2026-02-24T08:00:00+08:00'
>>> # Saturday 2026-02-28 is a make-up working day: contact is allowed.
>>> next_lawful_contact(datetime(2026, 2, 28, 9, 30, tzinfo=sh), sh, "CN", policy).isoformat()
'2026-02-28T09:30:00+08:00'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

log = logging.getLogger(__name__)
MAX_DAYS_AHEAD = 60
"""A calendar never blocks contact for longer than this (a safety net, not a rule)."""


@dataclass(frozen=True, slots=True)
class ContactPolicy:
    """The lender's contact rules: quiet hours, weekends, public holidays."""

    quiet_start: int = 21
    quiet_end: int = 8
    skip_weekends: bool = False
    skip_holidays: bool = True


@lru_cache(maxsize=256)
def _calendar(code: str, year: int) -> tuple[frozenset[date], frozenset[date]] | None:
    """(public holidays, make-up working days) of one calendar and year; None if unknown."""
    country, _, subdiv = code.upper().partition("-")
    try:
        cal = holidays.country_holidays(country, subdiv=subdiv or None, years=year)
    except (NotImplementedError, KeyError, ValueError) as exc:
        log.warning("unknown holiday calendar %r (%s): only quiet hours apply", code, exc)
        return None
    workdays = frozenset(getattr(cal, "weekend_workdays", ()) or ())
    return frozenset(cal.keys()), workdays


def is_contact_day(day: date, calendar: str | None, policy: ContactPolicy) -> bool:
    """Whether collectors may contact on this local date at all."""
    known = _calendar(calendar, day.year) if calendar else None
    holidays_, workdays = known if known is not None else (frozenset(), frozenset())
    if policy.skip_holidays and day in holidays_:
        return False
    return not (policy.skip_weekends and day.weekday() >= 5 and day not in workdays)


def next_lawful_contact(
    at: datetime, tz: ZoneInfo, calendar: str | None, policy: ContactPolicy
) -> datetime:
    """The first instant at or after ``at`` that is a contact day outside quiet hours."""
    local = at.astimezone(tz)
    start, end = policy.quiet_start, policy.quiet_end
    day, hour = local.date(), local.hour
    if start > end:  # quiet window across midnight, e.g. 21:00-08:00
        if hour >= start:
            day, local = day + timedelta(days=1), None  # type: ignore[assignment]
        elif hour < end:
            local = None  # type: ignore[assignment]
    elif start <= hour < end:
        local = None  # type: ignore[assignment]
    for _ in range(MAX_DAYS_AHEAD):
        if is_contact_day(day, calendar, policy):
            if local is not None:
                return local
            return datetime.combine(day, time(end), tzinfo=tz)
        day, local = day + timedelta(days=1), None  # type: ignore[assignment]
    return datetime.combine(day, time(end), tzinfo=tz)
