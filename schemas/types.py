"""Field types shared by every event and output record.

Why one module: money, ids, codes and timestamps arrive from three producer
systems (core banking, the card switch, loan servicing) that do not agree on
how to write them. Each rule is defined once here, so every model parses it the
same way, prints it the same way, and the JSON Schema the producers read says
exactly what the parser enforces.

Money is the delicate one. The contract allows a JSON string (``"1250.00"``)
or a JSON number; both become an exact :class:`~decimal.Decimal` (never a
float) and are written back as a JSON string in plain notation:

>>> from pydantic import TypeAdapter
>>> money = TypeAdapter(Money)
>>> money.validate_python("1250.10")
Decimal('1250.10')
>>> money.dump_json(money.validate_python(1000))
b'"1000"'

Bounds (at most 18 digits before the point and 8 significant places after it)
keep sums inside the default 28-digit decimal context and stop a hostile
``1e999999999`` from turning into a gigabyte of zeros when printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Context, Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    GetJsonSchemaHandler,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

__all__ = [
    "BALANCE",
    "MONEY",
    "RATE",
    "Balance",
    "CalendarDate",
    "CountryCode",
    "Currency",
    "CustomerId",
    "DecimalRule",
    "EventId",
    "EventTime",
    "Identifier",
    "Mcc",
    "Money",
    "Rate",
    "TimeZoneName",
]

_PLAIN_DECIMAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")
# Wide enough that quantising a bounded value never rounds by accident,
# whatever the caller's thread-local decimal context says.
_EXACT = Context(prec=60)


def _negative() -> PydanticCustomError:
    return PydanticCustomError("decimal_negative", "must not be negative")


@dataclass(frozen=True, slots=True)
class DecimalRule:
    """How one kind of decimal quantity is read from the wire and written back.

    Used as an ``Annotated`` marker: it also supplies the JSON Schema, so the
    published schema and the parser cannot drift apart.

    >>> MONEY.validate("0.1")
    Decimal('0.1')
    >>> MONEY.serialize(Decimal("1E+3"))
    '1000'
    """

    signed: bool
    integer_digits: int
    fraction_digits: int
    description: str

    @property
    def pattern(self) -> str:
        """The JSON Schema pattern a string value must match."""
        sign = "-?" if self.signed else ""
        return (
            rf"^{sign}0*[0-9]{{1,{self.integer_digits}}}"
            rf"(\.[0-9]{{1,{self.fraction_digits}}}0*)?$"
        )

    def validate(self, value: object) -> Decimal:
        """Turn a wire or Python value into an exact, bounded Decimal."""
        if isinstance(value, str):
            return self._from_text(value)
        if isinstance(value, Decimal):
            return self._check(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return self._check(Decimal(value))
        if isinstance(value, float):
            # Only reachable from Python callers; the wire decoder never hands
            # over floats. repr() is the shortest text that round-trips.
            return self._check(Decimal(repr(value)))
        raise PydanticCustomError("decimal_type", "must be a decimal string or a number")

    def _from_text(self, text: str) -> Decimal:
        # The hot path (producers mostly send strings): bounds are checked on
        # the digits themselves, before any Decimal arithmetic.
        match = _PLAIN_DECIMAL.fullmatch(text)
        if match is None:
            raise PydanticCustomError("decimal_syntax", 'must be a plain decimal such as "1250.00"')
        sign, whole, fraction = match.groups()
        if sign and not self.signed and (whole.strip("0") or (fraction or "").strip("0")):
            raise _negative()
        if len(whole) > self.integer_digits and len(whole.lstrip("0")) > self.integer_digits:
            raise self._too_large()
        if (
            fraction is not None
            and len(fraction) > self.fraction_digits
            and len(fraction.rstrip("0")) > self.fraction_digits
        ):
            raise self._too_precise()
        number = Decimal(text)
        return number.copy_abs() if sign and number.is_zero() else number

    def _check(self, number: Decimal) -> Decimal:
        if not number.is_finite():
            raise PydanticCustomError("decimal_not_finite", "must be a finite number")
        if number.is_signed():
            if number.is_zero():
                number = number.copy_abs()
            elif not self.signed:
                raise _negative()
        if not number.is_zero() and number.adjusted() >= self.integer_digits:
            raise self._too_large()
        exponent = number.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -self.fraction_digits:
            quantum = Decimal(1).scaleb(-self.fraction_digits)
            if number.quantize(quantum, context=_EXACT) != number:
                raise self._too_precise()
        return number

    def _too_large(self) -> PydanticCustomError:
        return PydanticCustomError(
            "decimal_too_large",
            "must have at most {digits} digits before the decimal point",
            {"digits": self.integer_digits},
        )

    def _too_precise(self) -> PydanticCustomError:
        return PydanticCustomError(
            "decimal_too_precise",
            "must have at most {places} decimal places",
            {"places": self.fraction_digits},
        )

    @staticmethod
    def serialize(value: Decimal) -> str:
        """Plain notation, never an exponent, so it matches :attr:`pattern`."""
        return format(value, "f")

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        as_string = {"type": "string", "pattern": self.pattern}
        if handler.mode == "serialization":
            return {**as_string, "description": f"{self.description}, as a decimal string."}
        limit = 10**self.integer_digits
        as_number: dict[str, Any] = {"type": "number", "exclusiveMaximum": limit}
        if self.signed:
            as_number["exclusiveMinimum"] = -limit
        else:
            as_number["minimum"] = 0
        return {
            "anyOf": [as_string, as_number],
            "description": f'{self.description}: a decimal string such as "1250.00"'
            " or a JSON number.",
        }


MONEY = DecimalRule(
    signed=False,
    integer_digits=18,
    fraction_digits=8,
    description="Non-negative amount",
)
BALANCE = DecimalRule(
    signed=True,
    integer_digits=18,
    fraction_digits=8,
    description="Balance, negative when overdrawn",
)
RATE = DecimalRule(
    signed=False,
    integer_digits=6,
    fraction_digits=12,
    description="Non-negative rate",
)


_MONEY_OUT = PlainSerializer(DecimalRule.serialize, return_type=str, when_used="json")

Money = Annotated[Decimal, PlainValidator(MONEY.validate), _MONEY_OUT, MONEY]
"""Non-negative amount of money (pair it with a :data:`Currency`)."""
Balance = Annotated[Decimal, PlainValidator(BALANCE.validate), _MONEY_OUT, BALANCE]
"""A balance, which unlike an amount may be negative (an overdraft)."""
Rate = Annotated[Decimal, PlainValidator(RATE.validate), _MONEY_OUT, RATE]
"""A non-negative rate such as ``annual_rate``."""

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
"""ISO 4217 alphabetic code, e.g. ``CNY``."""
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
"""ISO 3166-1 alpha-2 code, e.g. ``CN``."""
Mcc = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")]
"""Merchant category code: four digits, kept as text (``"0742"``)."""
CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
"""Any other producer-assigned id (loan, account, counterparty, alert)."""

_TIMESTAMP_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")
_DATE_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _wire_timestamp(value: object) -> object:
    # pydantic would also take unix seconds (1700000000 or "1700000000");
    # the contract says RFC 3339, and a bare number is ambiguous (s or ms?).
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("timestamp_type", "must be an RFC 3339 timestamp string")
    if _TIMESTAMP_SHAPE.match(value) is None:
        raise PydanticCustomError(
            "timestamp_syntax", "must be an RFC 3339 timestamp such as 2024-03-05T10:15:30+08:00"
        )
    return value


def _utc_representable(value: datetime) -> datetime:
    # 0001-01-01T00:00+05:00 parses but cannot be converted to UTC, which every
    # window computation downstream does. An offset moves the year by one at most.
    if 1901 <= value.year <= 9997:
        return value
    try:
        year = value.astimezone(UTC).year
    except OverflowError:
        year = 0
    if not 1900 <= year <= 9998:
        raise PydanticCustomError("timestamp_range", "must be between the years 1900 and 9998")
    return value


def _wire_date(value: object) -> object:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("date_type", "must be a date string (YYYY-MM-DD)")
    if _DATE_SHAPE.fullmatch(value) is None:
        raise PydanticCustomError("date_syntax", "must be a date (YYYY-MM-DD)")
    return value


EventTime = Annotated[
    AwareDatetime, BeforeValidator(_wire_timestamp), AfterValidator(_utc_representable)
]
"""RFC 3339 timestamp that must carry a UTC offset (``Z`` or ``+08:00``)."""
CalendarDate = Annotated[date, BeforeValidator(_wire_date)]
"""A calendar date, ``YYYY-MM-DD``."""

_ZONE_SHAPE = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")


def _iana_zone(value: str) -> str:
    if _ZONE_SHAPE.fullmatch(value) is None:
        raise PydanticCustomError(
            "timezone_unknown", "must be an IANA time zone such as Asia/Shanghai"
        )
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise PydanticCustomError(
            "timezone_unknown", "must be an IANA time zone such as Asia/Shanghai"
        ) from exc
    return value


TimeZoneName = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_iana_zone)
]
"""IANA time zone name, checked against the zoneinfo database."""
