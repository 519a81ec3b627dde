"""Events the service sends itself about related customers.

A customer's state lives on its own partition, so when it matters to another
customer (a guarantor or a group member) the change is announced as one of
these, keyed by the affected customer, on the internal topic
``credit.related-party.v1``. They are never accepted on the public input
topics, and the public decoder does not know their types.
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from schemas.codec import InvalidEvent
from schemas.types import Currency, CustomerId, EventId, EventTime, Money


class _Internal(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: EventId
    customer_id: CustomerId  # the affected customer (the message key)
    related_customer_id: CustomerId  # the customer whose change this announces
    occurred_at: EventTime
    relation: Literal["guarantor", "group_member", "shared_collateral", "household"]


class RelatedExposure(_Internal):
    """The related customer's own exposure is now ``exposure`` (0 when unlinked)."""

    type: Literal["related.exposure"] = "related.exposure"
    exposure: Money
    currency: Currency | Literal["XXX"]


class RelatedDefault(_Internal):
    """The related customer defaulted or has a loan substandard or worse."""

    type: Literal["related.default"] = "related.default"
    loan_class: str
    reason: str


InternalEvent = Annotated[RelatedExposure | RelatedDefault, Field(discriminator="type")]
_ADAPTER: TypeAdapter[RelatedExposure | RelatedDefault] = TypeAdapter(InternalEvent)


def decode_internal(raw: bytes) -> RelatedExposure | RelatedDefault:
    """Decode an internal event; anything else is an :class:`InvalidEvent`."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", f"not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidEvent("not_object", "an internal event must be a JSON object")
    try:
        return _ADAPTER.validate_python(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidEvent("invalid_value", f"field '{where}': {first['msg']}") from None
