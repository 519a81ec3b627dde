"""Wire format: decode input bytes once, at the edge; encode our output records.

Why one decoder for the worker and for replay: a message is either an event
the core can trust, or an :class:`InvalidEvent` with a bounded ``reason`` (a
metric label) and a readable ``message`` that names the field, which then goes
to the dead-letter topic with the exact original bytes. Nothing else escapes
``decode_event``, whatever the bytes, so one poison message cannot stall a
partition.

Why orjson + ``validate_python`` rather than pydantic's ``validate_json``:
pydantic's JSON parser turns numbers into binary floats before a Decimal field
sees them (``1250.10`` becomes ``Decimal('1250.1')``, ``0.10000000000000000001``
becomes ``Decimal('0.1')``), and the contract wants the decimal the producer
wrote. orjson is a strict RFC 8259 parser (valid UTF-8 only, no NaN, no lone
surrogates, bounded depth) and fast; only when the top level holds a
fractional number is the payload re-read with the standard library, which
hands those numbers over as exact Decimals. Producers that send money as
strings, as the contract suggests, never pay for the second read.

>>> event = decode_event(
...     b'{"event_id":"e-1","type":"loan.written_off","customer_id":"c-1",'
...     b'"occurred_at":"2024-03-05T10:00:00+08:00","loan_id":"L-1",'
...     b'"amount":1250.10,"currency":"CNY"}'
... )
>>> event.amount
Decimal('1250.10')
>>> encode_event(event)[-36:]
b'"amount":"1250.10","currency":"CNY"}'
>>> try:
...     decode_event(b'{"event_id":"e-2","type":"foo.bar"}')
... except InvalidEvent as exc:
...     print(exc.reason)
unknown_type
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from schemas.events import EVENT_MODELS, BaseEvent, InputEvent
from schemas.outputs import DeadLetter, DeadLetterReason

__all__ = ["InvalidEvent", "dead_letter", "decode_event", "encode", "encode_event"]

_INPUT_EVENT: TypeAdapter[InputEvent] = TypeAdapter(InputEvent)
_KNOWN_TYPES = ", ".join(sorted(EVENT_MODELS))
_MISSING = object()
_MAX_PROBLEMS = 10
_MAX_ECHO = 40

# Fields whose offending value may be quoted back in an error: amounts, codes,
# enumerations and times. Ids and free text are never echoed (a mistyped
# account_id could be a full account number).
_ECHO_FIELDS = frozenset(
    {
        "type", "occurred_at", "amount", "amount_due", "principal", "monthly_income",
        "annual_rate", "balance_after", "currency", "country", "direction", "channel",
        "merchant_category", "counterparty_type", "reason", "product", "relation",
        "segment", "verdict", "installment_no", "term_months", "due_date", "timezone",
    }
)  # fmt: skip

_PATTERN_MESSAGES = {
    "^[A-Z]{3}$": "must be a 3-letter ISO 4217 currency code such as CNY",
    "^[A-Z]{2}$": "must be a 2-letter ISO 3166 country code such as CN",
    "^[0-9]{4}$": "must be a 4-digit merchant category code",
}

_MESSAGES = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "dict_type": "must be an object",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
    "literal_error": "must be {expected}",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "greater_than_equal": "must be at least {ge}",
    "timezone_aware": "timestamp must carry a UTC offset",
    "datetime_parsing": "must be an RFC 3339 timestamp ({error})",
    "datetime_from_date_parsing": "must be an RFC 3339 timestamp ({error})",
    "date_parsing": "must be a date YYYY-MM-DD ({error})",
    "date_from_datetime_parsing": "must be a date YYYY-MM-DD ({error})",
    "date_from_datetime_inexact": "must be a date YYYY-MM-DD",
}

_REASON_ORDER: tuple[DeadLetterReason, ...] = ("missing_field", "wrong_type", "invalid_value")


class InvalidEvent(Exception):
    """An input that is not a valid event; carries what the dead letter needs.

    ``reason`` is a bounded category (safe as a metric label); ``message``
    is for people and names the offending field(s), joined with ``"; "``.
    """

    def __init__(self, reason: DeadLetterReason, message: str) -> None:
        super().__init__(reason, message)
        self.reason: DeadLetterReason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


def decode_event(raw: bytes | bytearray | memoryview) -> InputEvent:
    """Parse and validate one message value; raise :class:`InvalidEvent` if it is bad."""
    payload = _parse_object(raw)
    _check_type(payload)
    try:
        return _INPUT_EVENT.validate_python(payload)
    except ValidationError as exc:
        raise _invalid_from(exc) from None


def dead_letter(
    raw: bytes | bytearray | memoryview,
    error: InvalidEvent,
    *,
    source_topic: str,
    source_partition: int | None,
    source_offset: int | None,
    received_at: datetime,
) -> DeadLetter:
    """Build the dead-letter record for ``raw``, which failed with ``error``."""
    data = bytes(raw)
    event_id, customer_id = _recover_ids(data)
    return DeadLetter(
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        error=error.message,
        reason=error.reason,
        original=data.decode("utf-8", errors="replace"),
        original_base64=base64.b64encode(data).decode("ascii"),
        event_id=event_id,
        customer_id=customer_id,
        received_at=received_at,
    )


def encode(model: BaseModel) -> bytes:
    """Compact UTF-8 JSON: Decimals as strings, datetimes RFC 3339 with offset."""
    return model.__pydantic_serializer__.to_json(model)


def encode_event(event: BaseEvent) -> bytes:
    """Wire bytes for an input event; ``decode_event`` reads them back unchanged."""
    return encode(event)


def _parse_object(raw: bytes | bytearray | memoryview) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidEvent("not_object", f"not a JSON object (got {_json_kind(value)})")
    if float in map(type, value.values()):
        return _reparse_exact(raw)
    return value


def _reparse_exact(raw: bytes | bytearray | memoryview) -> dict[str, Any]:
    # orjson has already accepted the bytes as strict JSON, so this can only
    # fail on limits of the standard library parser (nesting depth).
    try:
        value = json.loads(bytes(raw).decode("utf-8"), parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent("not_json", f"not valid JSON: {type(exc).__name__}") from None
    if not isinstance(value, dict):  # pragma: no cover - orjson said it was an object
        raise InvalidEvent("not_object", "not a JSON object")
    return value


def _check_type(payload: Mapping[str, Any]) -> None:
    kind = payload.get("type", _MISSING)
    if kind is _MISSING:
        raise InvalidEvent("missing_field", "missing required field 'type'")
    if not isinstance(kind, str):
        raise InvalidEvent("wrong_type", f"field 'type': must be a string{_got('type', kind)}")
    if kind not in EVENT_MODELS:
        shown = kind if len(kind) <= 64 else kind[:64] + "..."
        raise InvalidEvent("unknown_type", f"unknown event type {shown!r} (known: {_KNOWN_TYPES})")


def _invalid_from(exc: ValidationError) -> InvalidEvent:
    problems: list[str] = []
    reasons: set[DeadLetterReason] = set()
    errors = exc.errors(include_url=False)
    for error in errors[:_MAX_PROBLEMS]:
        reasons.add(_reason(error["type"]))
        problems.append(_describe(error))
    if len(errors) > _MAX_PROBLEMS:
        problems.append(f"and {len(errors) - _MAX_PROBLEMS} more problems")
    reason = next((r for r in _REASON_ORDER if r in reasons), "invalid_value")
    return InvalidEvent(reason, "; ".join(problems))


def _reason(error_type: str) -> DeadLetterReason:
    if error_type == "missing":
        return "missing_field"
    if error_type.endswith("_type"):
        return "wrong_type"
    return "invalid_value"


def _describe(error: ErrorDetails) -> str:
    loc = error["loc"][1:]  # the first element is the union tag (the event type)
    path = _path(loc)
    if error["type"] == "missing":
        return f"missing required field '{path}'"
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if error["type"] == "string_pattern_mismatch":
        text = _PATTERN_MESSAGES.get(str(ctx.get("pattern")), "has the wrong format")
    elif error["type"] in _MESSAGES:
        text = _MESSAGES[error["type"]].format_map(ctx)
    else:
        text = error["msg"]  # our own PydanticCustomError texts, or pydantic's
    field = loc[0] if len(loc) == 1 and isinstance(loc[0], str) else ""
    return f"field '{path}': {text}{_got(field, error.get('input'))}"


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if len(part) <= 64 else part[:64] + "..."
            out += f".{text}" if out else text
    return out or "event"


def _got(field: str, value: object) -> str:
    """``' (got <value>)'`` when the value is safe and short enough to show."""
    if value is None or isinstance(value, bool):
        return f" (got {orjson.dumps(value).decode()})"
    if field not in _ECHO_FIELDS:
        return ""
    if isinstance(value, str):
        shown = orjson.dumps(value).decode()
    elif isinstance(value, int | Decimal):
        shown = str(value)
    else:
        return ""
    return f" (got {shown})" if len(shown) <= _MAX_ECHO else ""


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _recover_ids(data: bytes) -> tuple[str | None, str | None]:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(payload, dict):
        return None, None
    return _short_str(payload.get("event_id"), 128), _short_str(payload.get("customer_id"), 64)


def _short_str(value: object, limit: int) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None
