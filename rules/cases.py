"""Example cases kept beside a rule set: a customer's history, one event, the expected hits.

``FILE.yaml`` is tested against ``FILE.cases.yaml``::

    cases:
      - name: dpd_30 fires as arrears reach 30 days
        covers: dpd_30            # the rule this case is about
        given:                    # events that build the customer's state
          - {type: installment.due, occurred_at: "2026-01-10T00:00:00+00:00", loan_id: L1,
             installment_no: 1, due_date: "2026-01-10", amount_due: "100.00", currency: CNY}
        when: {type: tick, occurred_at: "2026-02-09T12:00:00+00:00"}   # the event judged
        scores: {}                # detector scores for ``when`` (optional)
        expect: [dpd_30]          # exactly the rules that must fire on ``when``

Top-level keys starting with ``x-`` are ignored: they hold YAML anchors
(``x-due: &due {...}``) that cases reuse as ``*due``. ``customer_id`` and
``event_id`` may be left out of events; a ``when`` of type
``tick`` is the passage of time (``Engine.advance``). State is built with the
real engine (``risk.engine.Engine``) and default settings, so a case tests the
rule against the features as production computes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.settings import Settings
from risk.customer import CustomerState
from risk.engine import Engine
from rules.engine import CompiledRuleSet, RuleFailure
from rules.features import EVENT_TYPES
from rules.loader import parse_yaml


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    covers: str | None = None
    customer_id: str = "C1"
    given: list[dict[str, Any]] = Field(default_factory=list)
    when: dict[str, Any]
    scores: dict[str, float] = Field(default_factory=dict)
    expect: list[str]


class CaseFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cases: list[Case] = Field(min_length=1)


@dataclass(slots=True)
class CaseResult:
    name: str
    covers: str | None
    expected: list[str]
    got: list[str] = field(default_factory=list)
    errors: list[RuleFailure] = field(default_factory=list)
    problem: str | None = None  # the case itself is broken

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.errors and sorted(self.got) == self.expected


def cases_path(rules_file: str | Path) -> Path:
    """``pack.yaml`` -> ``pack.cases.yaml``."""
    p = Path(rules_file)
    return p.with_name(p.name.removesuffix(p.suffix) + ".cases" + p.suffix)


class CaseFileError(ValueError):
    pass


def load_cases(path: str | Path) -> list[Case]:
    text = Path(path).read_text(encoding="utf-8")
    data, _, problems = parse_yaml(text)
    if problems:
        raise CaseFileError("\n".join(p.format(str(path)) for p in problems))
    if isinstance(data, dict):  # ``x-...`` keys hold YAML anchors shared by cases
        data = {k: v for k, v in data.items() if not str(k).startswith("x-")}
    try:
        return CaseFile.model_validate(data).cases
    except ValidationError as exc:
        raise CaseFileError(f"{path}: {exc}") from None


def build_event(data: dict[str, Any], customer_id: str, event_id: str) -> Any:
    """A validated event (or tick) from a case's shorthand."""
    payload = {"customer_id": customer_id, "event_id": event_id, **data}
    kind = payload.get("type")
    model = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ValueError(f"unknown event type {kind!r}")
    return model.model_validate(payload)


def apply(engine: Engine, state: CustomerState | None, event: Any) -> CustomerState:
    """Apply an event, or let time pass for a tick."""
    if event.type == "tick":
        st = state if state is not None else CustomerState(customer_id=event.customer_id)
        engine.advance(st, event.occurred_at)
        return st
    st, _ = engine.apply(state, event)
    return st


def run_case(rules: CompiledRuleSet, case: Case, engine: Engine, index: int = 0) -> CaseResult:
    result = CaseResult(case.name, case.covers, sorted(case.expect))
    known = {r.id for r in rules.rules}
    unknown = sorted(set(case.expect) - known) + (
        [case.covers] if case.covers and case.covers not in known else []
    )
    if unknown:
        result.problem = f"unknown rule id(s): {', '.join(unknown)}"
        return result
    try:
        state: CustomerState | None = None
        for i, data in enumerate(case.given):
            state = apply(engine, state, build_event(data, case.customer_id, f"c{index}-g{i}"))
        event = build_event(case.when, case.customer_id, f"c{index}-when")
    except (ValueError, ValidationError) as exc:
        result.problem = f"bad event: {exc}"
        return result
    before = rules.capture(state, engine, event)
    state = apply(engine, state, event)
    verdict = rules.evaluate(event, rules.view(state, engine, event, before), case.scores)
    result.got = sorted(h.rule_id for h in verdict.hits)
    result.errors = verdict.errors
    return result


def run_cases(
    rules: CompiledRuleSet, cases: list[Case], settings: Settings | None = None
) -> list[CaseResult]:
    engine = Engine(settings or Settings(), rule_set_version=rules.version)
    return [run_case(rules, case, engine, i) for i, case in enumerate(cases)]
