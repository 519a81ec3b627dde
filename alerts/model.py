"""What travels through the alert path: labels of a warning and the notifications made of it.

Every stage that decides by matching (inhibition, silences, grouping) looks
at a warning through one flat ``labels`` mapping of strings, as Alertmanager
does. That keeps matchers simple and uniform: an operator silences
``code=dpd_30`` the same way an inhibit rule targets it. Scalar explanation
values are exposed as ``explanation.<key>`` so a rule can say "a loan that
moved *to* loss" without a special case.

A :class:`Notification` is one warning as it will be shown to a person, with
why it is being shown now (``kind``): first time, escalated, repeated after
the repeat interval, or resolved. It is stored as JSON in the group buffers
and the outbox, so its encoding is part of the stored format.

>>> from datetime import UTC, datetime
>>> alert = RiskAlert(
...     alert_id="a-1", dedup_key="C1:L1:dpd_30", customer_id="C1", loan_id="L1",
...     severity="warning", source="rule", code="dpd_30", title="Loan L1 is 30 days past due",
...     explanation={"route": "both", "dpd": 30}, risk_score=420, risk_tier="medium",
...     loan_class="special_mention", triggered_at=datetime(2026, 2, 10, tzinfo=UTC),
...     evidence_event_ids=["e1"], rule_set_version="v1", status="firing",
... )
>>> labels = alert_labels(alert, "both")
>>> labels["code"], labels["route"], labels["explanation.dpd"]
('dpd_30', 'both', '30')
>>> SEVERITY_RANK["critical"] > SEVERITY_RANK["warning"]
True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias

import orjson

from alerts.clock import from_ms, to_ms
from schemas.outputs import RiskAlert

__all__ = [
    "BASE_LABELS",
    "SEVERITY_RANK",
    "Notification",
    "NotificationKind",
    "alert_labels",
    "is_known_label",
]

SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "high": 2, "critical": 3}
"""Order of severities; "escalated" means a higher rank than the one last notified."""

BASE_LABELS: frozenset[str] = frozenset(
    {
        "customer_id",
        "loan_id",
        "severity",
        "source",
        "code",
        "route",
        "risk_tier",
        "loan_class",
        "status",
        "dedup_key",
    }
)
"""Label names every warning has (``loan_id`` is empty when the warning has no loan)."""

EXPLANATION_PREFIX = "explanation."

NotificationKind: TypeAlias = Literal["firing", "escalated", "repeat", "resolved"]


def is_known_label(name: str) -> bool:
    """Whether a matcher may name this label (catches typos in silences and rules)."""
    return name in BASE_LABELS or (
        name.startswith(EXPLANATION_PREFIX) and len(name) > len(EXPLANATION_PREFIX)
    )


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def alert_labels(alert: RiskAlert, route: str) -> dict[str, str]:
    """The flat string labels of a warning, as matchers see them."""
    labels = {
        "customer_id": alert.customer_id,
        "loan_id": alert.loan_id or "",
        "severity": alert.severity,
        "source": alert.source,
        "code": alert.code,
        "route": route,
        "risk_tier": alert.risk_tier,
        "loan_class": alert.loan_class,
        "status": alert.status,
        "dedup_key": alert.dedup_key,
    }
    for key, value in alert.explanation.items():
        text = _scalar(value)
        if text is not None:
            labels[EXPLANATION_PREFIX + key] = text
    return labels


@dataclass(frozen=True, slots=True)
class Notification:
    """One warning as it is shown to a person, and why it is shown now."""

    alert: RiskAlert
    kind: NotificationKind
    route: str
    at: datetime
    """When the pipeline decided to notify (the injected clock)."""
    firing_since: datetime
    """When the current firing episode of this dedup key began."""

    @property
    def labels(self) -> dict[str, str]:
        return alert_labels(self.alert, self.route)

    def to_json(self) -> bytes:
        return encode_notification(
            self.alert.model_dump_json().encode(),
            self.kind,
            self.route,
            to_ms(self.at),
            to_ms(self.firing_since),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Notification:
        return cls.from_dict(orjson.loads(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        return cls(
            alert=RiskAlert.model_validate(data["alert"]),
            kind=data["kind"],
            route=data["route"],
            at=from_ms(int(data["at"])),
            firing_since=from_ms(int(data["since"])),
        )


def encode_notification(
    alert_json: bytes, kind: str, route: str, at_ms: int, since_ms: int
) -> bytes:
    """The stored form of a notification.

    Built by concatenation around the alert's own JSON (not re-encoded), and
    mirrored byte for byte by the Redis script that records warnings, so the
    memory and Redis stores hold the same bytes.
    """
    return b'{"kind":"%s","route":%s,"at":%d,"since":%d,"alert":%s}' % (
        kind.encode(),
        orjson.dumps(route),
        at_ms,
        since_ms,
        alert_json,
    )
