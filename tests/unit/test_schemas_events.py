"""Decoding input events at the edge: every type decodes, every bad input is named."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from schemas import topics
from schemas.codec import InvalidEvent, dead_letter, decode_event, encode, encode_event
from schemas.events import (
    EVENT_MODELS,
    EXAMPLES,
    CustomerUpdated,
    LoanOpened,
    TransactionPosted,
)

MONEY_FIELDS = ("amount", "amount_due", "principal", "monthly_income", "annual_rate")


def example(event_type: str, **changes: Any) -> dict[str, Any]:
    """A fresh copy of the canonical example, with ``changes`` applied (None deletes)."""
    body = copy.deepcopy(EXAMPLES[event_type])
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def wire(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def rejected(raw: bytes) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw)
    return info.value


def test_every_event_type_in_the_contract_has_a_model_and_an_example() -> None:
    contract_types = {t for types in topics.EVENT_TYPES_BY_TOPIC.values() for t in types}
    assert set(EVENT_MODELS) == contract_types
    assert set(EXAMPLES) == contract_types


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_valid_example_decodes_to_its_class(event_type: str) -> None:
    body = example(event_type)
    event = decode_event(wire(body))
    assert type(event) is EVENT_MODELS[event_type]
    assert event.type == event_type
    assert event.event_id == body["event_id"]
    assert event.occurred_at.utcoffset() is not None
    assert event.occurred_at == datetime(2024, 3, 5, 2, 15, 30, tzinfo=UTC)
    for name in MONEY_FIELDS:
        if name in body:
            value = getattr(event, name)
            assert isinstance(value, Decimal)
            assert str(value) == body[name]


def test_json_number_becomes_the_exact_decimal_of_its_text() -> None:
    raw = wire(example("transaction.posted")).replace(b'"1250.00"', b"1250.1")
    assert decode_event(raw).amount == Decimal("1250.1")  # type: ignore[union-attr]
    raw = wire(example("transaction.posted")).replace(b'"1250.00"', b"1250.10")
    assert str(decode_event(raw).amount) == "1250.10"  # type: ignore[union-attr]
    # beyond a binary float's precision: 17 significant digits
    raw = wire(example("transaction.posted")).replace(b'"1250.00"', b"1234567890123456.78")
    assert str(decode_event(raw).amount) == "1234567890123456.78"  # type: ignore[union-attr]
    raw = wire(example("loan.opened")).replace(b'"0.0725"', b"0.072500000001")
    assert str(decode_event(raw).annual_rate) == "0.072500000001"  # type: ignore[union-attr]
    raw = wire(example("transaction.posted", amount=1250))
    assert decode_event(raw).amount == Decimal(1250)  # type: ignore[union-attr]


def test_balance_after_may_be_negative_but_amounts_may_not() -> None:
    event = decode_event(wire(example("transaction.posted", balance_after="-310.25")))
    assert isinstance(event, TransactionPosted)
    assert event.balance_after == Decimal("-310.25")


def test_unknown_extra_fields_are_tolerated_and_dropped() -> None:
    body = example("loan.closed", producer_version="7.2", nested={"a": [1, 2.5, None]})
    event = decode_event(wire(body))
    assert event.event_id == body["event_id"]
    assert b"producer_version" not in encode_event(event)


def test_customer_updated_fields_are_all_optional() -> None:
    body = {k: v for k, v in EXAMPLES["customer.updated"].items() if k in {"event_id", "type"}}
    body |= {"customer_id": "c-1", "occurred_at": "2024-03-05T10:15:30Z", "timezone": "UTC"}
    event = decode_event(wire(body))
    assert isinstance(event, CustomerUpdated)
    assert event.timezone == "UTC"
    assert event.segment is None and event.contact_consent is None


def test_guarantor_ids_default_to_empty_tuple() -> None:
    event = decode_event(wire(example("loan.opened", guarantor_ids=None)))
    assert isinstance(event, LoanOpened)
    assert event.guarantor_ids == ()
    body = example("loan.opened")
    body["guarantor_ids"] = None  # an explicit null means "none"
    event = decode_event(wire(body))
    assert isinstance(event, LoanOpened)
    assert event.guarantor_ids == ()


INVALID = [
    pytest.param(b"not json at all", "not_json", "not valid JSON", id="not-json"),
    pytest.param(b"", "not_json", "not valid JSON", id="empty"),
    pytest.param(b'{"type": "loan.closed"', "not_json", "not valid JSON", id="truncated"),
    pytest.param(b'{"a": "\xff"}', "not_json", "not valid JSON", id="bad-utf8"),
    pytest.param(b"[1, 2]", "not_object", "array", id="json-array"),
    pytest.param(b'"transaction.posted"', "not_object", "string", id="json-string"),
    pytest.param(b"null", "not_object", "null", id="json-null"),
    pytest.param(
        wire(example("installment.due", loan_id=None)),
        "missing_field",
        "missing required field 'loan_id'",
        id="missing-field",
    ),
    pytest.param(
        wire(example("loan.closed", type=None)),
        "missing_field",
        "missing required field 'type'",
        id="missing-type",
    ),
    pytest.param(
        wire(example("installment.due", installment_no="three")),
        "wrong_type",
        "field 'installment_no': must be an integer",
        id="mistyped-int",
    ),
    pytest.param(
        wire(example("installment.due", installment_no=True)),
        "wrong_type",
        "field 'installment_no'",
        id="bool-is-not-int",
    ),
    pytest.param(
        wire(example("transaction.posted", occurred_at=1709604930)),
        "wrong_type",
        "field 'occurred_at'",
        id="epoch-number-timestamp",
    ),
    pytest.param(
        wire(example("transaction.posted", amount=[1])),
        "wrong_type",
        "field 'amount'",
        id="mistyped-money",
    ),
    pytest.param(
        wire(example("loan.closed", type=7)),
        "wrong_type",
        "field 'type': must be a string",
        id="type-not-string",
    ),
    pytest.param(
        wire(example("loan.closed", type="foo.bar")),
        "unknown_type",
        "unknown event type 'foo.bar' (known: alert.feedback,",
        id="unknown-type",
    ),
    pytest.param(
        wire(example("transaction.posted", amount="-5.00")),
        "invalid_value",
        "field 'amount': must not be negative (got \"-5.00\")",
        id="negative-amount-string",
    ),
    pytest.param(
        wire(example("repayment.received", amount=-5)),
        "invalid_value",
        "field 'amount': must not be negative (got -5)",
        id="negative-amount-number",
    ),
    pytest.param(
        wire(example("transaction.posted", amount="1e3")),
        "invalid_value",
        "field 'amount': must be a plain decimal",
        id="exponent-in-money-string",
    ),
    pytest.param(
        wire(example("transaction.posted", amount="NaN")),
        "invalid_value",
        "field 'amount'",
        id="nan-money",
    ),
    pytest.param(
        wire(example("transaction.posted", amount="0.000000001")),
        "invalid_value",
        "field 'amount': must have at most 8 decimal places",
        id="too-precise",
    ),
    pytest.param(
        wire(example("transaction.posted", amount="1" * 19)),
        "invalid_value",
        "field 'amount': must have at most 18 digits",
        id="too-large",
    ),
    pytest.param(
        wire(example("transaction.posted", occurred_at="2024-03-05T10:15:30")),
        "invalid_value",
        "field 'occurred_at': timestamp must carry a UTC offset",
        id="naive-timestamp",
    ),
    pytest.param(
        wire(example("transaction.posted", occurred_at="0001-01-01T00:00:00+05:00")),
        "invalid_value",
        "field 'occurred_at'",
        id="timestamp-before-utc-epoch-range",
    ),
    pytest.param(
        wire(example("installment.due", due_date="2024-02-30")),
        "invalid_value",
        "field 'due_date'",
        id="impossible-date",
    ),
    pytest.param(
        wire(example("transaction.posted", currency="usd")),
        "invalid_value",
        "field 'currency': must be a 3-letter ISO 4217 currency code",
        id="bad-currency",
    ),
    pytest.param(
        wire(example("transaction.posted", direction="sideways")),
        "invalid_value",
        "field 'direction': must be 'debit' or 'credit'",
        id="bad-enum",
    ),
    pytest.param(
        wire(example("customer.updated", timezone="Mars/Olympus_Mons")),
        "invalid_value",
        "field 'timezone': must be an IANA time zone",
        id="bad-timezone",
    ),
    pytest.param(
        wire(example("customer.updated", timezone="../../etc/passwd")),
        "invalid_value",
        "field 'timezone'",
        id="timezone-path-traversal",
    ),
    pytest.param(
        wire(example("loan.opened", term_months=0)),
        "invalid_value",
        "field 'term_months': must be at least 1",
        id="zero-term",
    ),
    pytest.param(
        wire(example("loan.opened", guarantor_ids=["ok", ""])),
        "invalid_value",
        "field 'guarantor_ids[1]': must not be empty",
        id="empty-guarantor-id",
    ),
    pytest.param(
        wire(example("customer.updated", contact_consent={"sms": "yes"})),
        "wrong_type",
        "field 'contact_consent.sms': must be true or false",
        id="consent-not-bool",
    ),
]


@pytest.mark.parametrize(("raw", "reason", "fragment"), INVALID)
def test_invalid_input_is_rejected_with_reason_and_named_field(
    raw: bytes, reason: str, fragment: str
) -> None:
    error = rejected(raw)
    assert error.reason == reason
    assert fragment in error.message
    assert str(error) == error.message


def test_several_problems_are_joined_and_the_most_structural_reason_wins() -> None:
    body = example("transaction.posted", amount="-1", currency="usd", account_id=None)
    error = rejected(wire(body))
    assert error.reason == "missing_field"
    parts = error.message.split("; ")
    assert len(parts) == 3
    assert any("'account_id'" in p for p in parts)
    assert any("'amount'" in p for p in parts)
    assert any("'currency'" in p for p in parts)


def test_error_messages_do_not_echo_ids_or_free_text() -> None:
    secret = 6222020200112233445  # looks like a full card/account number
    error = rejected(wire(example("transaction.posted", account_id=secret)))
    assert error.reason == "wrong_type"
    assert "account_id" in error.message
    assert str(secret) not in error.message
    error = rejected(wire(example("loan.opened", purpose=["Jane Doe, 12 High St"])))
    assert "Jane" not in error.message


def test_models_are_frozen() -> None:
    event = decode_event(wire(example("loan.closed")))
    with pytest.raises(ValidationError):
        event.loan_id = "other"  # type: ignore[misc,union-attr]


def test_encode_writes_money_as_string_and_times_with_offset() -> None:
    event = decode_event(wire(example("transaction.posted", amount=1000)))
    body = orjson.loads(encode_event(event))
    assert body["amount"] == "1000"
    assert body["balance_after"] == "-310.25"
    assert body["occurred_at"] == "2024-03-05T10:15:30+08:00"
    assert decode_event(encode_event(event)) == event


def test_dead_letter_keeps_exact_bytes_and_recovers_ids() -> None:
    raw = wire(example("repayment.failed", reason="bank on fire"))
    error = rejected(raw)
    letter = dead_letter(
        raw,
        error,
        source_topic="credit.repayments.v1",
        source_partition=3,
        source_offset=41,
        received_at=datetime(2024, 3, 5, tzinfo=UTC),
    )
    assert letter.reason == "invalid_value"
    assert "field 'reason'" in letter.error
    assert base64.b64decode(letter.original_base64) == raw
    assert letter.original == raw.decode()
    assert letter.event_id == "evt-rfail-0001"
    assert letter.customer_id == "cust-00042"
    assert orjson.loads(encode(letter))["source_offset"] == 41


def test_dead_letter_of_garbage_has_no_ids() -> None:
    raw = b"\x00\xffnot json"
    letter = dead_letter(
        raw,
        rejected(raw),
        source_topic="credit.loans.v1",
        source_partition=None,
        source_offset=None,
        received_at=datetime(2024, 3, 5, tzinfo=UTC),
    )
    assert letter.event_id is None and letter.customer_id is None
    assert letter.reason == "not_json"
    assert base64.b64decode(letter.original_base64) == raw
    assert "\ufffd" in letter.original
