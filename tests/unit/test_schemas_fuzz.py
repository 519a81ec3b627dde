"""Property tests: no input crashes the decoder, and valid events survive the wire."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, get_args

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import InvalidEvent, dead_letter, decode_event, encode, encode_event
from schemas.events import (
    EVENT_MODELS,
    EXAMPLES,
    BaseEvent,
    Channel,
    CounterpartyType,
    Direction,
    FailureReason,
    Product,
    Relation,
    RepaymentFailed,
    Segment,
    Verdict,
)
from schemas.outputs import DeadLetter, DeadLetterReason

REASONS = set(get_args(DeadLetterReason))
RECEIVED = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.decimals(allow_nan=False, allow_infinity=False).map(str)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


def check_never_crashes(raw: bytes) -> None:
    """decode_event returns an event or raises InvalidEvent, and the dead letter is sound."""
    try:
        event = decode_event(raw)
    except InvalidEvent as error:
        assert error.reason in REASONS
        assert error.message
        letter = dead_letter(
            raw,
            error,
            source_topic="credit.transactions.v1",
            source_partition=0,
            source_offset=1,
            received_at=RECEIVED,
        )
        assert base64.b64decode(letter.original_base64, validate=True) == raw
        assert DeadLetter.model_validate_json(encode(letter)) == letter
    else:
        assert isinstance(event, BaseEvent)
        assert decode_event(encode_event(event)) == event


@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_ever_raise_invalid_event(raw: bytes) -> None:
    check_never_crashes(raw)


@given(json_values)
def test_arbitrary_json_values_only_ever_raise_invalid_event(value: Any) -> None:
    check_never_crashes(json.dumps(value).encode())


@given(
    st.sampled_from(sorted(EXAMPLES)),
    st.data(),
)
def test_mutated_examples_only_ever_raise_invalid_event(
    event_type: str, data: st.DataObject
) -> None:
    body = json.loads(json.dumps(EXAMPLES[event_type]))
    for key in data.draw(st.lists(st.sampled_from(sorted(body)), max_size=3, unique=True)):
        if data.draw(st.booleans()):
            del body[key]
        else:
            body[key] = data.draw(json_values)
    check_never_crashes(json.dumps(body).encode())


@given(st.text(max_size=80))
def test_any_timezone_text_is_accepted_or_rejected_cleanly(zone: str) -> None:
    body = dict(EXAMPLES["customer.updated"], timezone=zone)
    check_never_crashes(orjson.dumps(body))


@given(st.one_of(st.text(max_size=40), st.integers(), st.decimals().map(str)))
def test_any_amount_is_accepted_or_rejected_cleanly(amount: Any) -> None:
    body = dict(EXAMPLES["transaction.posted"], amount=amount)
    check_never_crashes(json.dumps(body).encode())


def test_deeply_nested_json_is_rejected_cleanly() -> None:
    for depth in (100, 2000, 100_000):
        check_never_crashes(b"[" * depth + b"]" * depth)
        nested = b'{"a":' * depth + b"1" + b"}" * depth
        check_never_crashes(nested)
        body = orjson.dumps(EXAMPLES["loan.closed"])[:-1] + b',"x":' + b"[" * depth
        check_never_crashes(body + b"1.5" + b"]" * depth + b',"f":0.5}')


def test_huge_numbers_are_rejected_cleanly() -> None:
    for number in (b"1e400", b"-1e400", b"9" * 5000, b"1" + b"0" * 400, b"1e-400"):
        raw = orjson.dumps(EXAMPLES["transaction.posted"]).replace(b'"1250.00"', number)
        check_never_crashes(raw)
        raw = orjson.dumps(EXAMPLES["installment.due"]).replace(b"3,", number + b",", 1)
        check_never_crashes(raw)


# --- valid events generated from the models themselves ----------------------

MAX_MONEY = Decimal("999999999999999999.99999999")
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
ids = st.text(min_size=1, max_size=128)
customer_ids = st.text(min_size=1, max_size=64)
money = st.integers(0, 8).flatmap(
    lambda places: st.decimals(min_value=0, max_value=MAX_MONEY, places=places)
) | st.integers(0, 10**18 - 1)
balance = st.integers(0, 8).flatmap(
    lambda places: st.decimals(min_value=-MAX_MONEY, max_value=MAX_MONEY, places=places)
)
rate = st.integers(0, 12).flatmap(
    lambda places: st.decimals(min_value=0, max_value=Decimal("999999"), places=places)
)
upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def choice(alias: Any) -> st.SearchStrategy[str]:
    return st.sampled_from(get_args(alias))


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": ids,
    "customer_id": customer_ids,
    "occurred_at": st.datetimes(
        min_value=datetime(1901, 1, 1), max_value=datetime(9997, 12, 31), timezones=offsets
    ),
    "account_id": ids,
    "loan_id": ids,
    "counterparty_id": ids,
    "alert_id": ids,
    "transaction_event_id": ids,
    "related_customer_id": customer_ids,
    "amount": money,
    "amount_due": money,
    "principal": money,
    "monthly_income": money,
    "balance_after": balance,
    "annual_rate": rate,
    "currency": st.text(upper, min_size=3, max_size=3),
    "country": st.text(upper, min_size=2, max_size=2),
    "merchant_category": st.text("0123456789", min_size=4, max_size=4),
    "direction": choice(Direction),
    "channel": choice(Channel),
    "counterparty_type": choice(CounterpartyType),
    "product": choice(Product),
    "relation": choice(Relation),
    "segment": choice(Segment),
    "verdict": choice(Verdict),
    "reason": st.text(),
    "installment_no": st.integers(1, 10**9),
    "term_months": st.integers(1, 600),
    "due_date": st.dates(),
    "purpose": st.text(),
    "guarantor_ids": st.lists(customer_ids, max_size=3).map(tuple),
    "timezone": st.sampled_from(["UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York"]),
    "holiday_calendar": st.text(min_size=1, max_size=32),
    "contact_consent": st.dictionaries(st.text(max_size=10), st.booleans(), max_size=4),
}


def events_of(model: type[BaseEvent]) -> st.SearchStrategy[BaseEvent]:
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in model.model_fields.items():
        if name == "type":
            continue
        strategy = FIELDS[name]
        if name == "reason" and model is RepaymentFailed:
            strategy = choice(FailureReason)
        if field.is_required():
            required[name] = strategy
        else:
            optional[name] = st.none() | strategy
    return st.fixed_dictionaries(required, optional=optional).map(model.model_validate)


valid_events = st.sampled_from(list(EVENT_MODELS.values())).flatmap(events_of)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(valid_events)
def test_valid_events_round_trip_through_the_wire(event: BaseEvent) -> None:
    raw = encode_event(event)
    decoded = decode_event(raw)
    assert decoded == event
    assert type(decoded) is type(event)
    assert encode_event(decoded) == raw


@given(money)
def test_money_round_trips_exactly_as_string_and_as_number(amount: Decimal | int) -> None:
    text = format(Decimal(amount), "f")
    for literal in (orjson.dumps(text), text.encode()):
        body = orjson.dumps(dict(EXAMPLES["loan.written_off"], amount="PLACEHOLDER"))
        event = decode_event(body.replace(b'"PLACEHOLDER"', literal))
        assert event.amount == Decimal(amount)  # type: ignore[union-attr]
        assert event.amount.as_tuple() == Decimal(text).as_tuple()  # type: ignore[union-attr]
