"""Input events of the product contract (SPEC.md, "Input events"), one model per type.

Why typed records: decoding and validation happen once, at the edge
(``schemas.codec.decode_event``); everything behind it (risk state, detectors,
alerts) can then trust that money is a ``Decimal``, timestamps carry an offset
and enumerations hold a known value, instead of re-checking dictionaries.

Models are frozen (an event is a fact; nobody edits it) and ignore unknown
fields, because producers may add fields without asking us first. ``type`` has
a default on each class so Python callers need not repeat it, but it is
required on the wire (the JSON Schema says so and the decoder checks it).

>>> from decimal import Decimal
>>> closed = LoanClosed(
...     event_id="e-1", customer_id="c-1", occurred_at="2024-03-05T10:00:00Z", loan_id="L-1"
... )
>>> closed.type
'loan.closed'
>>> EVENT_MODELS["loan.closed"] is LoanClosed
True
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt

from schemas.types import (
    Balance,
    CalendarDate,
    CountryCode,
    Currency,
    CustomerId,
    EventId,
    EventTime,
    Identifier,
    Mcc,
    Money,
    Rate,
    TimeZoneName,
)

__all__ = [
    "EVENT_MODELS",
    "EXAMPLES",
    "AlertFeedback",
    "BaseEvent",
    "Channel",
    "CounterpartyType",
    "CustomerLinked",
    "CustomerUnlinked",
    "CustomerUpdated",
    "Direction",
    "FailureReason",
    "InputEvent",
    "InstallmentDue",
    "LoanClosed",
    "LoanOpened",
    "LoanRestructured",
    "LoanWrittenOff",
    "OutcomeDefault",
    "OutcomeFraudConfirmed",
    "Product",
    "Relation",
    "RepaymentFailed",
    "RepaymentReceived",
    "Segment",
    "TransactionPosted",
    "Verdict",
]

Direction: TypeAlias = Literal["debit", "credit"]
Channel: TypeAlias = Literal["card", "atm", "transfer", "cash", "direct_debit", "online", "branch"]
CounterpartyType: TypeAlias = Literal[
    "employer", "securities", "real_estate", "gambling", "crypto", "lender", "other"
]
FailureReason: TypeAlias = Literal[
    "insufficient_funds", "account_closed", "mandate_revoked", "other"
]
Product: TypeAlias = Literal[
    "mortgage", "auto", "consumer", "credit_card", "sme_working_capital", "other"
]
Relation: TypeAlias = Literal["guarantor", "group_member", "shared_collateral", "household"]
Segment: TypeAlias = Literal["retail", "sme", "corporate"]
Verdict: TypeAlias = Literal["true_positive", "false_positive"]

InstallmentNo = Annotated[StrictInt, Field(ge=1)]


def _none_as_empty(value: object) -> object:
    return () if value is None else value


CustomerIds = Annotated[
    tuple[CustomerId, ...],
    BeforeValidator(_none_as_empty, json_schema_input_type=list[CustomerId] | None),
]
"""A list of customer ids; ``null`` on the wire means none."""


def _schema_extra(schema: dict[str, Any], model: type[BaseModel]) -> None:
    # ``type`` has a Python default for convenience, but on the wire it is
    # what routes the event, so the published schema must require it.
    required: list[str] = schema.setdefault("required", [])
    if "type" not in required:
        required.insert(0, "type")
    example = EXAMPLES.get(model.model_fields["type"].default)
    if example is not None:
        schema["examples"] = [copy.deepcopy(example)]


class BaseEvent(BaseModel):
    """Fields every input event carries."""

    model_config = ConfigDict(frozen=True, extra="ignore", json_schema_extra=_schema_extra)

    event_id: EventId = Field(description="Unique per event; the idempotency key.")
    type: str
    customer_id: CustomerId
    occurred_at: EventTime = Field(description="Event time, RFC 3339 with a UTC offset.")


class TransactionPosted(BaseEvent):
    """An account transaction (card, transfer, cash...) was posted."""

    type: Literal["transaction.posted"] = "transaction.posted"
    account_id: Identifier
    amount: Money
    currency: Currency
    direction: Direction
    channel: Channel
    merchant_category: Mcc | None = None
    counterparty_id: Identifier | None = None
    counterparty_type: CounterpartyType | None = None
    country: CountryCode | None = None
    balance_after: Balance | None = None


class InstallmentDue(BaseEvent):
    """An instalment of a loan fell due."""

    type: Literal["installment.due"] = "installment.due"
    loan_id: Identifier
    installment_no: InstallmentNo
    due_date: CalendarDate
    amount_due: Money
    currency: Currency


class RepaymentReceived(BaseEvent):
    """Money was received against a loan."""

    type: Literal["repayment.received"] = "repayment.received"
    loan_id: Identifier
    amount: Money
    currency: Currency
    installment_no: InstallmentNo | None = None


class RepaymentFailed(BaseEvent):
    """A collection attempt (direct debit, card charge) failed."""

    type: Literal["repayment.failed"] = "repayment.failed"
    loan_id: Identifier
    amount: Money
    currency: Currency
    reason: FailureReason


class LoanOpened(BaseEvent):
    """A loan was disbursed."""

    type: Literal["loan.opened"] = "loan.opened"
    loan_id: Identifier
    product: Product
    principal: Money
    currency: Currency
    term_months: Annotated[StrictInt, Field(ge=1)]
    annual_rate: Rate
    purpose: str | None = None
    guarantor_ids: CustomerIds = ()


class LoanRestructured(BaseEvent):
    """A loan's terms were changed (forbearance, rescheduling)."""

    type: Literal["loan.restructured"] = "loan.restructured"
    loan_id: Identifier
    reason: str | None = None


class LoanClosed(BaseEvent):
    """A loan was repaid in full or otherwise closed."""

    type: Literal["loan.closed"] = "loan.closed"
    loan_id: Identifier


class LoanWrittenOff(BaseEvent):
    """A loan (or part of it) was written off."""

    type: Literal["loan.written_off"] = "loan.written_off"
    loan_id: Identifier
    amount: Money
    currency: Currency


class CustomerUpdated(BaseEvent):
    """Profile change; every field is optional and absent means unchanged."""

    type: Literal["customer.updated"] = "customer.updated"
    segment: Segment | None = None
    monthly_income: Money | None = None
    currency: Currency | None = None
    timezone: TimeZoneName | None = None
    holiday_calendar: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    contact_consent: dict[str, StrictBool] | None = None


class CustomerLinked(BaseEvent):
    """Two customers became related (guarantee, group, collateral, household)."""

    type: Literal["customer.linked"] = "customer.linked"
    related_customer_id: CustomerId
    relation: Relation


class CustomerUnlinked(BaseEvent):
    """A relation between two customers ended."""

    type: Literal["customer.unlinked"] = "customer.unlinked"
    related_customer_id: CustomerId
    relation: Relation


class OutcomeDefault(BaseEvent):
    """Ground truth: the customer (or one loan) defaulted."""

    type: Literal["outcome.default"] = "outcome.default"
    loan_id: Identifier | None = None
    reason: str | None = None


class OutcomeFraudConfirmed(BaseEvent):
    """Ground truth: a transaction was confirmed as fraud."""

    type: Literal["outcome.fraud_confirmed"] = "outcome.fraud_confirmed"
    transaction_event_id: EventId


class AlertFeedback(BaseEvent):
    """An analyst's verdict on an alert we raised."""

    type: Literal["alert.feedback"] = "alert.feedback"
    alert_id: Identifier
    verdict: Verdict


InputEvent = Annotated[
    TransactionPosted
    | InstallmentDue
    | RepaymentReceived
    | RepaymentFailed
    | LoanOpened
    | LoanRestructured
    | LoanClosed
    | LoanWrittenOff
    | CustomerUpdated
    | CustomerLinked
    | CustomerUnlinked
    | OutcomeDefault
    | OutcomeFraudConfirmed
    | AlertFeedback,
    Field(discriminator="type"),
]
"""Any input event; ``type`` selects the model."""

EVENT_MODELS: dict[str, type[BaseEvent]] = {
    model.model_fields["type"].default: model
    for model in (
        TransactionPosted,
        InstallmentDue,
        RepaymentReceived,
        RepaymentFailed,
        LoanOpened,
        LoanRestructured,
        LoanClosed,
        LoanWrittenOff,
        CustomerUpdated,
        CustomerLinked,
        CustomerUnlinked,
        OutcomeDefault,
        OutcomeFraudConfirmed,
        AlertFeedback,
    )
}
"""Model class by wire ``type`` string."""

_COMMON = {"customer_id": "cust-00042", "occurred_at": "2024-03-05T10:15:30+08:00"}

EXAMPLES: dict[str, dict[str, Any]] = {
    "transaction.posted": {
        "event_id": "evt-tx-0001", "type": "transaction.posted", **_COMMON,
        "account_id": "acc-9001", "amount": "1250.00", "currency": "CNY",
        "direction": "debit", "channel": "card", "merchant_category": "5411",
        "counterparty_id": "mer-777", "counterparty_type": "other", "country": "CN",
        "balance_after": "-310.25",
    },
    "installment.due": {
        "event_id": "evt-due-0001", "type": "installment.due", **_COMMON,
        "loan_id": "loan-7", "installment_no": 3, "due_date": "2024-03-10",
        "amount_due": "2300.00", "currency": "CNY",
    },
    "repayment.received": {
        "event_id": "evt-rep-0001", "type": "repayment.received", **_COMMON,
        "loan_id": "loan-7", "amount": "2300.00", "currency": "CNY", "installment_no": 3,
    },
    "repayment.failed": {
        "event_id": "evt-rfail-0001", "type": "repayment.failed", **_COMMON,
        "loan_id": "loan-7", "amount": "2300.00", "currency": "CNY",
        "reason": "insufficient_funds",
    },
    "loan.opened": {
        "event_id": "evt-lo-0001", "type": "loan.opened", **_COMMON,
        "loan_id": "loan-7", "product": "consumer", "principal": "50000.00", "currency": "CNY",
        "term_months": 24, "annual_rate": "0.0725", "purpose": "home renovation",
        "guarantor_ids": ["cust-00077"],
    },
    "loan.restructured": {
        "event_id": "evt-lr-0001", "type": "loan.restructured", **_COMMON,
        "loan_id": "loan-7", "reason": "payment holiday",
    },
    "loan.closed": {
        "event_id": "evt-lc-0001", "type": "loan.closed", **_COMMON, "loan_id": "loan-7",
    },
    "loan.written_off": {
        "event_id": "evt-lw-0001", "type": "loan.written_off", **_COMMON,
        "loan_id": "loan-7", "amount": "18400.50", "currency": "CNY",
    },
    "customer.updated": {
        "event_id": "evt-cu-0001", "type": "customer.updated", **_COMMON,
        "segment": "retail", "monthly_income": "18000.00", "currency": "CNY",
        "timezone": "Asia/Shanghai", "holiday_calendar": "CN",
        "contact_consent": {"sms": True, "phone": True, "email": False},
    },
    "customer.linked": {
        "event_id": "evt-cl-0001", "type": "customer.linked", **_COMMON,
        "related_customer_id": "cust-00077", "relation": "guarantor",
    },
    "customer.unlinked": {
        "event_id": "evt-cul-0001", "type": "customer.unlinked", **_COMMON,
        "related_customer_id": "cust-00077", "relation": "guarantor",
    },
    "outcome.default": {
        "event_id": "evt-od-0001", "type": "outcome.default", **_COMMON,
        "loan_id": "loan-7", "reason": "90 days past due",
    },
    "outcome.fraud_confirmed": {
        "event_id": "evt-of-0001", "type": "outcome.fraud_confirmed", **_COMMON,
        "transaction_event_id": "evt-tx-0001",
    },
    "alert.feedback": {
        "event_id": "evt-af-0001", "type": "alert.feedback", **_COMMON,
        "alert_id": "alt-3f2a9c", "verdict": "true_positive",
    },
}  # fmt: skip
"""One valid wire example per event type (published in the JSON Schemas, used by tests)."""
