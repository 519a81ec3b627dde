"""Dedup: one notification per dedup key per repeat interval, unless it escalates.

Each (customer, dedup key) has a :class:`DedupRecord`: whether it is firing
or resolved, the severity and alert id last seen, and when and at what
severity a person was last told. :func:`decide` turns the record and an
incoming warning into a decision; the memory store applies it directly and
the Redis store runs the same decision in a Lua script (``alerts.redis_store``)
so the check and the update are one atomic step shared by every worker and
kept across restarts. The shared contract tests run both.

The rules, in order:

- the very alert id last notified is a redelivery (a replay, a rebalance):
  never notified twice;
- a warning that is suppressed (inhibited, silenced, held by the breaker) or
  has nobody to tell is recorded as firing (so it can inhibit others and be
  resolved) but not notified;
- a key that is new, was resolved, was forgotten (not seen for
  ``forget_after``) or was never notified in this episode is notified
  (``firing``);
- a severity above the one last notified is notified (``escalated``);
- otherwise it is notified only once ``repeat_interval`` has passed since the
  last notification (``repeat``), and deduplicated before that.

Resolving (:func:`decide_resolve`) turns a firing key to resolved, and tells
people only if they were told it was firing: a resolved message about a
warning nobody saw is noise.

Records are kept per customer (not per bare dedup key) because a rule's
dedup key template need not contain the customer id, and because inhibition
and "resolve everything on this loan" read one customer's records at once.

>>> rec, kind, why = decide(None, alert_id="a1", severity=1, now_ms=0, suppressed="",
...                          deliverable=True, repeat_ms=1000, forget_ms=10**9,
...                          route="both", snap=b"{}")
>>> kind, why
('firing', 'new')
>>> decide(rec, alert_id="a2", severity=1, now_ms=500, suppressed="", deliverable=True,
...        repeat_ms=1000, forget_ms=10**9, route="both", snap=b"{}")[1:]
(None, 'deduplicated')
>>> decide(rec, alert_id="a3", severity=3, now_ms=500, suppressed="", deliverable=True,
...        repeat_ms=1000, forget_ms=10**9, route="both", snap=b"{}")[1:]
('escalated', 'escalated')
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property
from typing import Literal

import orjson

from alerts.clock import from_ms
from alerts.model import NotificationKind, alert_labels
from schemas.outputs import RiskAlert

__all__ = ["DedupRecord", "decide", "decide_resolve"]


@dataclass(frozen=True)
class DedupRecord:
    """What is remembered of one (customer, dedup key)."""

    status: Literal["firing", "resolved"]
    severity: int
    """Rank of the last warning seen (``alerts.model.SEVERITY_RANK``)."""
    alert_id: str
    """Id of the last warning seen."""
    notified_alert_id: str
    """Id of the last warning a person was told about in this episode ("" if none)."""
    firing_since_ms: int
    seen_ms: int
    notified_ms: int
    """When a person was last told in this episode (meaningful when ``notified_alert_id``)."""
    notified_severity: int
    """Rank last told (-1: not in this episode)."""
    route: str
    snapshot: bytes
    """The last warning seen, as its JSON (what a resolved message is made of)."""
    suppressed: str
    """Why the last warning was not notified ("" if it was or had no need)."""

    @property
    def firing(self) -> bool:
        return self.status == "firing"

    def fresh(self, now_ms: int, forget_ms: int) -> bool:
        """Whether the record still counts (seen within ``forget_after``)."""
        return now_ms - self.seen_ms < forget_ms

    @cached_property
    def alert(self) -> RiskAlert:
        return RiskAlert.model_validate_json(self.snapshot)

    @cached_property
    def labels(self) -> dict[str, str]:
        return alert_labels(self.alert, self.route)

    @property
    def firing_since(self) -> datetime:
        return from_ms(self.firing_since_ms)

    # The stored form, shared with the Lua script: short keys, the snapshot as a
    # JSON string so it is never re-encoded.
    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "st": self.status,
                "sev": self.severity,
                "aid": self.alert_id,
                "naid": self.notified_alert_id,
                "first": self.firing_since_ms,
                "seen": self.seen_ms,
                "nt": self.notified_ms,
                "nsev": self.notified_severity,
                "route": self.route,
                "snap": self.snapshot.decode(),
                "sup": self.suppressed,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> DedupRecord:
        d = orjson.loads(raw)
        return cls(
            status=d["st"],
            severity=int(d["sev"]),
            alert_id=d["aid"],
            notified_alert_id=d["naid"],
            firing_since_ms=int(d["first"]),
            seen_ms=int(d["seen"]),
            notified_ms=int(d["nt"]),
            notified_severity=int(d["nsev"]),
            route=d["route"],
            snapshot=d["snap"].encode(),
            suppressed=d["sup"],
        )


def decide(
    prev: DedupRecord | None,
    *,
    alert_id: str,
    severity: int,
    now_ms: int,
    suppressed: str,
    deliverable: bool,
    repeat_ms: int,
    forget_ms: int,
    route: str,
    snap: bytes,
) -> tuple[DedupRecord, NotificationKind | None, str]:
    """The new record, the kind of notification to send (None: none) and why."""
    if prev is not None and not prev.fresh(now_ms, forget_ms):
        prev = None
    episode = prev if prev is not None and prev.firing else None
    record = DedupRecord(
        status="firing",
        severity=severity,
        alert_id=alert_id,
        notified_alert_id=episode.notified_alert_id if episode else "",
        firing_since_ms=episode.firing_since_ms if episode else now_ms,
        seen_ms=now_ms,
        notified_ms=episode.notified_ms if episode else 0,
        notified_severity=episode.notified_severity if episode else -1,
        route=route,
        snapshot=snap,
        suppressed=suppressed,
    )
    kind: NotificationKind | None
    if episode is not None and episode.notified_alert_id == alert_id:
        return replace(record, suppressed=episode.suppressed), None, "duplicate"
    if suppressed:
        return record, None, suppressed
    if not deliverable:
        return record, None, "no_receiver"
    if episode is None or not episode.notified_alert_id:
        kind, why = "firing", "new"
    elif severity > episode.notified_severity:
        kind, why = "escalated", "escalated"
    elif now_ms - episode.notified_ms >= repeat_ms:
        kind, why = "repeat", "repeat"
    else:
        return record, None, "deduplicated"
    notified = replace(
        record, notified_alert_id=alert_id, notified_ms=now_ms, notified_severity=severity
    )
    return notified, kind, why


def decide_resolve(
    prev: DedupRecord | None,
    *,
    now_ms: int,
    forget_ms: int,
    allowed: bool,
    snap: bytes | None = None,
) -> tuple[DedupRecord | None, bool, str]:
    """The resolved record (None: nothing to change), whether to notify, and why.

    ``allowed`` is False when resolved messages are off or the key is silenced.
    ``snap`` replaces the stored warning when the caller has a newer one (a
    warning published with status ``resolved``).
    """
    if prev is None or not prev.fresh(now_ms, forget_ms):
        return None, False, "unknown"
    if not prev.firing:
        return None, False, "already_resolved"
    record = replace(
        prev,
        status="resolved",
        seen_ms=now_ms,
        snapshot=snap if snap is not None else prev.snapshot,
    )
    if not prev.notified_alert_id:
        return record, False, "never_notified"
    if not allowed:
        return record, False, "not_allowed"
    return record, True, "resolved"
