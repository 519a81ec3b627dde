"""The shape of a rule set: what an author writes in YAML, validated by pydantic.

This module checks structure only (required keys, enumerations, the shape of
a condition tree). Whether a feature exists and a threshold has the right
type is checked when the rule set is compiled (:mod:`rules.conditions`). The
editor schema ``rules/schema.json`` is generated from these models by
:func:`json_schema` (``python -m rules.model`` rewrites it).

>>> rule = Rule.model_validate({
...     "id": "dpd_30", "description": "30 days past due", "why": "arrears harden",
...     "applies_to": ["tick"], "severity": "high", "cooldown": "P1DT6H",
...     "dedup_key": "{customer_id}:dpd30", "route": "both",
...     "condition": {"feature": "max_dpd", "op": "ge", "value": 30},
... })
>>> rule.cooldown
108000
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
)

Severity = Literal["info", "warning", "high", "critical"]
Route = Literal["risk_desk", "collections", "both"]
Op = Literal[
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "in",
    "not_in",
    "between",
    "is_null",
    "not_null",
    "contains",
    "changed_by",
    "changed_to",
    "crosses",
]
OPS: tuple[str, ...] = Op.__args__  # type: ignore[attr-defined]

RULE_ID = r"^[a-z][a-z0-9_.-]{0,63}$"
_DURATION = re.compile(
    r"P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?"
)


def parse_cooldown(value: object) -> int:
    """Seconds from an ISO-8601 duration (``PT6H``, ``P1DT12H``, ``P2W``) or a number.

    >>> parse_cooldown("PT90M"), parse_cooldown(3600), parse_cooldown("P1W")
    (5400, 3600, 604800)
    """
    if isinstance(value, bool):
        raise ValueError("cooldown must be an ISO-8601 duration such as PT6H or seconds")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("cooldown must not be negative")
        return value
    if isinstance(value, str):
        m = _DURATION.fullmatch(value.strip())
        if m and value.strip() not in ("P", "PT") and not value.strip().endswith("T"):
            w, d, h, mi, s = (int(m.group(k) or 0) for k in "wdhms")
            return (((w * 7 + d) * 24 + h) * 60 + mi) * 60 + s
    raise ValueError(
        f"cooldown {value!r} is not an ISO-8601 duration (PT6H, P1D, P1DT12H) or whole seconds"
    )


Cooldown = Annotated[
    int,
    BeforeValidator(parse_cooldown),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": _DURATION.pattern},
            ],
            "description": "How long after a warning the same dedup key stays quiet: "
            "an ISO-8601 duration (PT6H, P1D) or seconds.",
        }
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Leaf(_Strict):
    """One comparison: exactly one of ``feature``, ``field``, ``score``, an op, a value."""

    feature: str | None = Field(default=None, description="A feature from the allowlist.")
    field: str | None = Field(default=None, description="A field of the event.")
    score: str | None = Field(default=None, description="A detector's score for the event.")
    op: Op
    value: Any = Field(
        default=None,
        description="Threshold: a number, a decimal string, a string, a boolean, a list "
        "(in, not_in, between [low, high]); absent for is_null and not_null.",
    )


class AllOf(_Strict):
    """True when every condition is (short-circuits on the first false)."""

    all: list[Condition] = Field(min_length=1)


class AnyOf(_Strict):
    """True when some condition is (short-circuits on the first true)."""

    any: list[Condition] = Field(min_length=1)


class NotOf(_Strict):
    """True when the condition is false."""

    not_: Condition = Field(alias="not")


def _condition_kind(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return key
        return "leaf"
    if isinstance(value, BaseModel):
        return {AllOf: "all", AnyOf: "any", NotOf: "not"}.get(type(value), "leaf")
    return "leaf"


Condition = Annotated[
    Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")]
    | Annotated[Leaf, Tag("leaf")],
    Discriminator(_condition_kind),
]

for _model in (AllOf, AnyOf, NotOf):
    _model.model_rebuild()


class Rule(_Strict):
    """One early-warning rule."""

    id: str = Field(pattern=RULE_ID, description="Stable id; the warning's code.")
    description: str = Field(min_length=1, description="The warning's title.")
    why: str = Field(min_length=1, description="Why a lender cares, in one line.")
    applies_to: list[str] = Field(
        min_length=1,
        description="Event types the rule judges (e.g. transaction.posted, tick); '*' for all.",
    )
    condition: Condition
    severity: Severity
    cooldown: Cooldown = 0
    dedup_key: str = Field(
        min_length=1,
        description="Template of the dedup key, e.g. '{customer_id}:{loan_id}:dpd30'; "
        "placeholders: customer_id, rule_id, event_type, event_id, an event field or a feature.",
    )
    route: Route
    enabled: bool = True


class RuleSet(_Strict):
    """A named, versioned list of rules."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$", description="Rule set name (key).")
    version: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.+-]{1,64}$",
        description="Version; derived from a hash of the content when absent.",
    )
    rules: list[Rule]

    def content_version(self) -> str:
        """The given version, else 12 hex digits of the content hash (stable across runs)."""
        if self.version:
            return self.version
        return content_hash(self.model_dump(mode="json", by_alias=True, exclude={"version"}))


def content_hash(data: Any) -> str:
    """12 hex digits of a SHA-256 over canonical JSON."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def json_schema() -> dict[str, Any]:
    """The editor schema of a rule-set file, with the feature allowlist as an enumeration."""
    from rules.features import EVENT_TYPES, FEATURES

    schema = RuleSet.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "creditwatch rule set"
    defs = schema["$defs"]
    leaf = defs["Leaf"]["properties"]
    leaf["feature"] = {
        "anyOf": [{"enum": sorted(FEATURES)}, {"type": "null"}],
        "description": "A feature from the allowlist.",
    }
    types_ = {"enum": [*sorted(EVENT_TYPES), "*"]}
    defs["Rule"]["properties"]["applies_to"]["items"] = types_
    return schema


SCHEMA_PATH = Path(__file__).with_name("schema.json")


def render_schema() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover - regenerates rules/schema.json
    SCHEMA_PATH.write_text(render_schema())
    sys.stdout.write(f"wrote {SCHEMA_PATH}\n")
