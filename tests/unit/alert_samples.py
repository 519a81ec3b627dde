"""A warning as the alert path receives it, for the unit tests of that path."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.outputs import RiskAlert

T0 = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)


def make_alert(**fields: Any) -> RiskAlert:
    """A firing 30-day arrears warning on loan L1 of customer C1; ``fields`` override."""
    base: dict[str, Any] = {
        "alert_id": "a-1",
        "dedup_key": "C1:L1:dpd_30",
        "customer_id": "C1",
        "loan_id": "L1",
        "severity": "warning",
        "source": "rule",
        "code": "dpd_30",
        "title": "Loan L1 is 30 days past due",
        "explanation": {"route": "both", "dpd": 30},
        "risk_score": 420,
        "risk_tier": "medium",
        "loan_class": "special_mention",
        "triggered_at": T0,
        "evidence_event_ids": ["e1"],
        "rule_set_version": "v1",
        "status": "firing",
    }
    return RiskAlert(**{**base, **fields})
