"""Label matchers, the one vocabulary of silences, inhibit rules and routes.

Four operators as in Alertmanager: ``=`` and ``!=`` compare the whole value,
``=~`` and ``!~`` match a regular expression against the *whole* value
(anchored, so ``code=~dpd_`` does not quietly match ``dpd_90_extra``). A
label a warning does not have reads as the empty string, so ``loan_id=``
matches customer-level warnings. Regular expressions are compiled when the
matcher is built, so a bad one fails when the silence or the configuration is
created, with a message naming it, not when the first warning arrives.

A matcher is written ``name op value`` (value optionally in double quotes),
which is what the command line and configuration files use.

>>> m = Matcher.parse('severity=~"high|critical"')
>>> m.matches({"severity": "critical"}), m.matches({"severity": "warning"})
(True, False)
>>> str(Matcher.parse("code != dpd_1"))
'code!="dpd_1"'
>>> Matcher.parse("colour=red")
Traceback (most recent call last):
...
ValueError: unknown label 'colour' in matcher 'colour=red'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from alerts.model import is_known_label

__all__ = ["Matcher", "all_match"]

_SYNTAX = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


class Matcher(BaseModel):
    """``name op value`` over a warning's labels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            return cls._split(data)
        return data

    @model_validator(mode="after")
    def _check(self) -> Matcher:
        if not is_known_label(self.name):
            raise ValueError(f"unknown label {self.name!r} in matcher {self._text()!r}")
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"bad regular expression in matcher {self}: {exc}") from exc
        return self

    @staticmethod
    def _split(text: str) -> dict[str, str]:
        found = _SYNTAX.match(text)
        if found is None:
            raise ValueError(f"matcher {text!r} is not 'name op value' (op: = != =~ !~)")
        name, op, value = found.groups()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return {"name": name, "op": op, "value": value}

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """A matcher from its written form; ``ValueError`` naming the problem otherwise."""
        fields = cls._split(text)
        if not is_known_label(fields["name"]):
            raise ValueError(f"unknown label {fields['name']!r} in matcher {text!r}")
        return cls.model_validate(fields)

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        return re.compile(self.value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = self._regex.fullmatch(actual) is not None
        return hit if self.op == "=~" else not hit

    def _text(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'

    def __str__(self) -> str:
        return self._text()


def all_match(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher matches (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)
