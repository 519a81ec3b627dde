"""Records the service publishes (SPEC.md, "Outputs"), plus the dead-letter record.

Why strict models for our own output: subscribers (collections teams, the risk
desk's tools, the acceptance tests) build against these fields, so a typo or a
stray field in our code must fail here, in our tests, rather than in theirs.
Hence ``extra="forbid"``; ``frozen`` because a published record is history.

Money serialises as a JSON string (``"1250.00"``), timestamps as RFC 3339 with
an offset; ``schemas.codec.encode`` writes the bytes.

>>> from datetime import datetime, UTC
>>> letter = DeadLetter(
...     source_topic="credit.loans.v1", source_partition=0, source_offset=7,
...     error="not valid JSON", reason="not_json", original="{", original_base64="ew==",
...     event_id=None, customer_id=None, received_at=datetime(2024, 3, 5, tzinfo=UTC),
... )
>>> letter.reason
'not_json'
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.types import Currency, CustomerId, EventId, Identifier, Money

__all__ = [
    "AlertSource",
    "AlertStatus",
    "CollectionsStage",
    "CollectionsTask",
    "ContactChannel",
    "DeadLetter",
    "DeadLetterReason",
    "LoanClass",
    "LoanSummary",
    "RiskAlert",
    "RiskState",
    "RiskTier",
    "Severity",
    "TaskStatus",
]

Severity: TypeAlias = Literal["info", "warning", "high", "critical"]
AlertSource: TypeAlias = Literal["rule", "detector", "classification", "contagion"]
AlertStatus: TypeAlias = Literal["firing", "resolved"]
RiskTier: TypeAlias = Literal["premium", "low", "medium", "high"]
LoanClass: TypeAlias = Literal["normal", "special_mention", "substandard", "doubtful", "loss"]
CollectionsStage: TypeAlias = Literal["reminder", "call", "visit", "legal_review"]
ContactChannel: TypeAlias = Literal["sms", "email", "phone", "visit", "letter"]
TaskStatus: TypeAlias = Literal["open", "cancelled"]
DeadLetterReason: TypeAlias = Literal[
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "unknown_type",
    "invalid_value",
    "processing_error",
]
"""Bounded category of a rejected input; safe to use as a metric label."""

_OUTPUT = ConfigDict(frozen=True, extra="forbid")


class RiskAlert(BaseModel):
    """One early warning on ``credit.risk-alerts.v1``."""

    model_config = _OUTPUT

    alert_id: Identifier = Field(description="Stable: the same input always yields the same id.")
    dedup_key: str = Field(min_length=1)
    customer_id: CustomerId
    loan_id: Identifier | None = None
    severity: Severity
    source: AlertSource
    code: str = Field(min_length=1, description="Rule id or detector name.")
    title: str
    explanation: dict[str, Any] = Field(
        description="Reasons, feature values, thresholds or scores that made it fire."
    )
    risk_score: int = Field(ge=0, le=1000)
    risk_tier: RiskTier
    loan_class: LoanClass
    triggered_at: AwareDatetime = Field(description="Event time of the triggering input.")
    evidence_event_ids: list[EventId]
    rule_set_version: str
    status: AlertStatus


class CollectionsTask(BaseModel):
    """A task for a collections team on ``credit.collections-tasks.v1``.

    A task is published again, with the same ``task_id`` and ``status:
    cancelled``, when it is called off: the loan cured (back to 0 DPD), was
    closed or written off, or escalated to the next stage (one live task per
    loan). The cancellation repeats the task's stage, channel, priority and
    ``not_before`` so a team can match it to the contact it plans; its ``dpd``,
    ``overdue_amount``, ``reason`` and ``created_at`` are those of the moment it
    was cancelled. ``status`` is always written (the published schema requires
    it); it defaults to ``open`` so a record built as before is an open task.
    """

    # Serialization schema lists ``status`` as required: it is always published,
    # and subscribers may rely on it.
    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_serialization_defaults_required=True
    )

    task_id: Identifier
    customer_id: CustomerId
    loan_id: Identifier
    dpd: int = Field(ge=0, description="Days past due.")
    overdue_amount: Money
    currency: Currency
    stage: CollectionsStage
    channel: ContactChannel
    priority: int
    not_before: AwareDatetime = Field(
        description="Earliest lawful contact time: outside local quiet hours and holidays."
    )
    reason: str
    created_at: AwareDatetime
    status: TaskStatus = Field(
        default="open",
        description="open: to be worked; cancelled: called off (same task_id as the open one).",
    )


class LoanSummary(BaseModel):
    """One loan inside a :class:`RiskState`."""

    model_config = _OUTPUT

    loan_id: Identifier
    dpd: int = Field(ge=0)
    overdue_amount: Money
    currency: Currency
    loan_class: LoanClass
    outstanding_principal: Money | None = None
    status: str | None = None


class RiskState(BaseModel):
    """A customer's risk summary (``credit.risk-state.v1``, the CLI and the API)."""

    model_config = _OUTPUT

    customer_id: CustomerId
    risk_score: int = Field(ge=0, le=1000, description="0-1000, higher is riskier.")
    risk_tier: RiskTier
    loan_class: LoanClass = Field(description="Worst class over the customer's loans.")
    loans: dict[str, LoanSummary] = Field(description="By loan_id.")
    max_dpd: int = Field(ge=0)
    total_exposure: Money
    open_alerts: int = Field(ge=0)
    features: dict[str, Any] = Field(description="The rolling values the score rests on.")
    last_event_at: AwareDatetime | None


class DeadLetter(BaseModel):
    """An input that could not be processed, on ``credit.dead-letter.v1``."""

    model_config = _OUTPUT

    source_topic: str
    source_partition: int | None
    source_offset: int | None = Field(description="Kafka offset; in replay, the 1-based line.")
    error: str = Field(description="Human-readable; names the field, never personal data.")
    reason: DeadLetterReason
    original: str = Field(description="The original bytes as UTF-8, bad bytes replaced.")
    original_base64: str = Field(description="The exact original bytes, base64.")
    event_id: str | None = Field(description="Recovered from the payload when possible.")
    customer_id: str | None = Field(description="Recovered from the payload when possible.")
    received_at: AwareDatetime
