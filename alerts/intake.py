"""From the worker's published outputs into the alert path: warnings in, cleared conditions out.

The worker publishes each early warning to the alerts topic and a customer's
risk state to the risk-state topic whenever tier or loan class changes. The
delivery side reads both back (so only what was published is ever mailed)
and hands them here:

- a warning goes through the pipeline, and into the index with what the
  pipeline did with it;
- a loan's class change *back to normal* is the end of that loan's class
  warning, not a new warning: it is taken as the resolution of its dedup
  key, so the desk reads "resolved" rather than a fresh "info" warning;
- a risk state resolves the warnings its loans no longer justify
  (:func:`cleared_keys`): arrears warnings once the loan (or, for a warning
  about the customer's worst loan, every loan) is back to 0 days past due,
  and a loan's class warning once the loan is back to normal.

A warning published longer ago than ``max_age`` (by the Kafka timestamp) is
listed but nobody is told: a consumer group that starts on a topic with
months of history must not mail it all.

Plain Python with no Kafka import: the worker's agents call it, and so do
the unit tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from alerts.clock import to_ms
from alerts.dedup import DedupRecord
from alerts.factory import AlertService
from alerts.pipeline import Outcome
from schemas.outputs import RiskAlert, RiskState

__all__ = ["AlertIntake", "cleared_keys", "is_cure", "state_time"]

DPD_CODE = re.compile(r"dpd_[0-9]+")
"""Codes of arrears warnings (the engine's and the rule pack's DPD buckets)."""


def is_cure(alert: RiskAlert) -> bool:
    """A loan class change back to normal: the end of the loan's class warning.

    >>> from datetime import UTC, datetime
    >>> a = RiskAlert(alert_id="a-1", dedup_key="C1:L1:class", customer_id="C1", loan_id="L1",
    ...     severity="info", source="classification", code="loan_class_change",
    ...     title="Loan L1 moved from special_mention to normal",
    ...     explanation={"from": "special_mention", "to": "normal"}, risk_score=10,
    ...     risk_tier="low", loan_class="normal", triggered_at=datetime(2026, 2, 1, tzinfo=UTC),
    ...     evidence_event_ids=[], rule_set_version="v1", status="firing")
    >>> is_cure(a), is_cure(a.model_copy(update={"explanation": {"to": "substandard"}}))
    (True, False)
    """
    return (
        alert.status == "firing"
        and alert.source == "classification"
        and alert.explanation.get("to") == "normal"
    )


def state_time(state: RiskState) -> datetime | None:
    """The event time a risk state describes: its DPD clock or last event, the later."""
    times = [state.last_event_at] if state.last_event_at is not None else []
    as_of = state.features.get("as_of")
    if isinstance(as_of, str):
        try:
            parsed = datetime.fromisoformat(as_of)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            times.append(parsed)
    return max(times) if times else None


def cleared_keys(state: RiskState, records: Mapping[str, DedupRecord], at: datetime) -> list[str]:
    """Dedup keys of firing warnings whose condition this risk state shows cleared.

    - an arrears warning (``dpd_N``) keyed per loan (its dedup key names the
      loan) clears when that loan is back to 0 days past due; one keyed per
      customer (the rule pack's, about the worst loan) clears when no loan
      of the customer is past due;
    - a classification warning clears when its loan's class is back to normal.

    A warning raised after the state's own time is left alone: an older state
    read late (after a restart, from the compacted topic) cannot clear it.
    """
    out: list[str] = []
    for key, rec in sorted(records.items()):
        if not rec.firing:
            continue
        alert = rec.alert
        if alert.triggered_at > at:
            continue
        loan = state.loans.get(alert.loan_id) if alert.loan_id else None
        if DPD_CODE.fullmatch(alert.code):
            per_loan = loan is not None and alert.loan_id in key.split(":")
            if (per_loan and loan is not None and loan.dpd == 0) or (
                not per_loan and state.max_dpd == 0
            ):
                out.append(key)
        elif alert.source == "classification" and loan is not None and loan.loan_class == "normal":
            out.append(key)
    return out


RESOLVED_REASONS = frozenset({"resolved", "never_notified", "not_allowed", "already_resolved"})
"""Resolve outcomes after which the key is resolved in the dedup records."""


@dataclass
class AlertIntake:
    """Feeds published warnings and risk states to one :class:`AlertService`."""

    service: AlertService
    max_age: timedelta | None = timedelta(days=7)

    def _now_ms(self) -> int:
        return to_ms(self.service.pipeline.clock.now())

    async def take(self, alert: RiskAlert, *, published_ms: int | None = None) -> Outcome:
        """One warning from the alerts topic (``published_ms``: its Kafka timestamp)."""
        pipeline, index = self.service.pipeline, self.service.index
        now_ms = self._now_ms()
        if (
            self.max_age is not None
            and published_ms is not None
            and now_ms - published_ms > self.max_age.total_seconds() * 1000
        ):
            await index.add(alert, outcome="stale", detail="", now_ms=now_ms)
            return Outcome(alert.alert_id, alert.dedup_key, "stale")
        if is_cure(alert):
            outcome = await pipeline.submit(alert.model_copy(update={"status": "resolved"}))
            await index.add(alert, outcome=outcome.reason, detail="cured", now_ms=now_ms)
            await index.resolve_key(
                alert.customer_id, alert.dedup_key, by="loan class back to normal", now_ms=now_ms
            )
            return outcome
        outcome = await pipeline.submit(alert)
        await index.add(alert, outcome=outcome.reason, detail=outcome.detail, now_ms=now_ms)
        if alert.status == "resolved":
            await index.resolve_key(
                alert.customer_id, alert.dedup_key, by="alerts topic", now_ms=now_ms
            )
        return outcome

    async def clear(self, state: RiskState) -> list[Outcome]:
        """Resolve what a customer's new risk state shows cleared (see :func:`cleared_keys`)."""
        at = state_time(state)
        if at is None:
            return []
        pipeline, index = self.service.pipeline, self.service.index
        records = await pipeline.state.records(state.customer_id)
        outcomes: list[Outcome] = []
        for key in cleared_keys(state, records, at):
            outcome = await pipeline.resolve(state.customer_id, key, at)
            if outcome.reason in RESOLVED_REASONS:
                await index.resolve_key(
                    state.customer_id, key, by="risk state", now_ms=self._now_ms()
                )
            outcomes.append(outcome)
        return outcomes
