"""What the command line and the HTTP API call to drive the alert path.

Thin, JSON-ready wrappers over :class:`alerts.factory.AlertService`: list,
acknowledge and resolve warnings; create, list and expire silences; look at
and release circuit breakers; look at the outbox and requeue dead messages.
Inputs are the strings a person types (``code=dpd_30``, ``2h``); outputs are
plain dicts, so the CLI prints them and the API returns them without knowing
the internals.

>>> parse_duration("90m"), parse_duration("2h30m"), parse_duration("1d")
(datetime.timedelta(seconds=5400), datetime.timedelta(seconds=9000), datetime.timedelta(days=1))
>>> parse_duration("soon")
Traceback (most recent call last):
...
ValueError: duration 'soon' is not like 30m, 2h, 1d12h
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from alerts.breaker import BreakerState
from alerts.clock import from_ms, to_ms
from alerts.factory import AlertService
from alerts.index import AlertQuery
from alerts.silences import Silence, SilenceState

__all__ = [
    "ResolveConflict",
    "acknowledge_alert",
    "breaker_status",
    "create_silence",
    "expire_silence",
    "get_alert",
    "list_alerts",
    "list_silences",
    "outbox_status",
    "parse_duration",
    "release_breaker",
    "requeue_dead",
    "resolve_alert",
]

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``1d12h``, ``45s`` as a timedelta."""
    found = _DURATION.match(text.strip())
    if not text.strip() or found is None:
        raise ValueError(f"duration {text!r} is not like 30m, 2h, 1d12h")
    d, h, m, s = (int(g) if g else 0 for g in found.groups())
    return timedelta(days=d, hours=h, minutes=m, seconds=s)


class ResolveConflict(RuntimeError):
    """The warning's record kept changing under a resolve (try again)."""


async def list_alerts(service: AlertService, query: AlertQuery) -> list[dict[str, Any]]:
    """Listed warnings matching ``query``, newest first."""
    return [item.view() for item in await service.index.query(query)]


async def get_alert(service: AlertService, alert_id: str) -> dict[str, Any] | None:
    """One listed warning, with where its condition stands now (its dedup record)."""
    item = await service.index.get(alert_id)
    if item is None:
        return None
    view = item.view()
    a = item.alert
    record = (await service.pipeline.state.records(a.customer_id)).get(a.dedup_key)
    view["condition"] = (
        None
        if record is None
        else {
            "status": record.status,
            "firing_since": from_ms(record.firing_since_ms).isoformat(),
            "latest_alert_id": record.alert_id,
            "last_notified_alert_id": record.notified_alert_id or None,
            "last_notified_at": from_ms(record.notified_ms).isoformat()
            if record.notified_alert_id
            else None,
            "suppressed": record.suppressed or None,
        }
    )
    return view


async def acknowledge_alert(
    service: AlertService, alert_id: str, *, by: str, comment: str = ""
) -> dict[str, Any] | None:
    """Record that ``by`` is dealing with a warning (the first acknowledgement is kept)."""
    now_ms = to_ms(service.pipeline.clock.now())
    item = await service.index.acknowledge(alert_id, by=by, comment=comment, now_ms=now_ms)
    return None if item is None else item.view()


async def resolve_alert(
    service: AlertService, alert_id: str, *, by: str, comment: str = ""
) -> dict[str, Any] | None:
    """Resolve a warning's condition (its dedup key) by hand; None for an unknown id.

    The desk is told it was resolved if it had been told it was firing, as
    when the condition clears by itself; every listed warning of the key is
    marked resolved by ``by``. Idempotent.
    """
    item = await service.index.get(alert_id)
    if item is None:
        return None
    a = item.alert
    pipeline = service.pipeline
    for _ in range(5):
        outcome = await pipeline.resolve(a.customer_id, a.dedup_key, pipeline.clock.now())
        if outcome.reason != "conflict":
            break
    else:
        raise ResolveConflict(f"warning {alert_id}: its record kept changing, try again")
    now_ms = to_ms(pipeline.clock.now())
    await service.index.resolve_key(
        a.customer_id, a.dedup_key, by=by, now_ms=now_ms, comment=comment
    )
    after = await service.index.get(alert_id)
    return {
        "outcome": outcome.reason,
        "notified": outcome.kind == "resolved",
        "alert": (after or item).view(),
    }


def silence_view(silence: Silence, now: datetime) -> dict[str, Any]:
    return {
        **silence.model_dump(mode="json"),
        "matchers": [str(m) for m in silence.matchers],
        "state": silence.state(now),
    }


async def create_silence(
    service: AlertService,
    *,
    matchers: Sequence[str],
    created_by: str,
    comment: str,
    duration: str | timedelta | None = None,
    ends_at: datetime | None = None,
    starts_at: datetime | None = None,
) -> dict[str, Any]:
    """Create a silence; ``ValueError`` (naming the problem) for a bad request."""
    if isinstance(duration, str):
        duration = parse_duration(duration)
    silence = await service.silences.create(
        matchers,
        created_by=created_by,
        comment=comment,
        duration=duration,
        ends_at=ends_at,
        starts_at=starts_at,
    )
    return silence_view(silence, service.silences.clock.now())


async def list_silences(
    service: AlertService, state: SilenceState | None = None
) -> list[dict[str, Any]]:
    now = service.silences.clock.now()
    return [silence_view(s, now) for s in await service.silences.list(state)]


async def expire_silence(service: AlertService, silence_id: str, *, by: str) -> dict[str, Any]:
    silence = await service.silences.expire(silence_id, by=by)
    return silence_view(silence, service.silences.clock.now())


def breaker_view(state: BreakerState) -> dict[str, Any]:
    return {
        "code": state.code,
        "state": "open" if state.open else "closed",
        "opened_at": from_ms(state.since_ms).isoformat() if state.since_ms else None,
        "customers_in_window": state.count,
        "trip_at": state.trip_at,
        "held": state.held,
        "closed_at": from_ms(state.closed_ms).isoformat() if state.closed_ms else None,
        "closed_by": state.closed_by or None,
    }


async def breaker_status(service: AlertService) -> list[dict[str, Any]]:
    return [breaker_view(s) for s in await service.breaker.states()]


async def release_breaker(
    service: AlertService, code: str, *, by: str, deliver: bool
) -> dict[str, Any]:
    """Close a rule's breaker; deliver (``deliver=True``) or discard what it held."""
    report = await service.pipeline.release_breaker(code, by=by, deliver=deliver)
    queued = sum(1 for o in report.outcomes if o.queued)
    return {"code": code, "released": report.released, "delivered": deliver, "queued": queued}


async def outbox_status(service: AlertService, *, dead_limit: int = 20) -> dict[str, Any]:
    dead = await service.outbox.dead(dead_limit)
    return {
        "pending": await service.outbox.pending(),
        "dead": [
            {
                "id": m.id,
                "receiver": m.receiver,
                "kind": m.kind,
                "attempts": m.attempts,
                "error": m.error,
                "created_at": from_ms(m.created_ms).isoformat(),
            }
            for m in dead
        ],
    }


async def requeue_dead(service: AlertService, message_ids: Sequence[str] | None = None) -> int:
    """Make dead messages (all, or these) due again, e.g. after fixing the relay's config."""
    now_ms = to_ms(service.pipeline.clock.now())
    return await service.outbox.requeue_dead(message_ids, now_ms=now_ms)
